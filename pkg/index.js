// ORION's client: runs on the page, owns the worker, and turns the message protocol into
// promises. Every method returns a Promise; failures reject with an OrionError carrying `code`.

/** The protocol version this client speaks; the worker must speak the same. */
export const PROTOCOL_VERSION = 1;

/** This package's version. */
export const CLIENT_VERSION = '0.1.0';

/** Every error code, as `orion_core::ErrorCode` defines it. */
export const ErrorCode = Object.freeze({
  INVALID_MESSAGE: 'ERR_INVALID_MESSAGE',
  MESSAGE_TOO_LARGE: 'ERR_MESSAGE_TOO_LARGE',
  UNSUPPORTED_PROTOCOL: 'ERR_UNSUPPORTED_PROTOCOL',
  INIT_ORDER: 'ERR_INIT_ORDER',
  CIRCUIT_OPEN: 'ERR_CIRCUIT_OPEN',
  DEBUG_DISABLED: 'ERR_DEBUG_DISABLED',
  WORKER_CRASHED: 'ERR_WORKER_CRASHED',
  WORKER_START: 'ERR_WORKER_START',
  CLOSED: 'ERR_CLOSED',
  MODEL_LOAD: 'ERR_MODEL_LOAD',
  EMBEDDING: 'ERR_EMBEDDING',
  INTERNAL: 'ERR_INTERNAL',
  INVALID_INPUT: 'ERR_INVALID_INPUT',
  QUOTA: 'ERR_QUOTA',
  STORE: 'ERR_STORE',
  BACKUP_INVALID: 'ERR_BACKUP_INVALID',
  GENERATION: 'ERR_GENERATION',
  CANCELLED: 'ERR_CANCELLED',
  TIMEOUT: 'ERR_TIMEOUT',
  TOOL: 'ERR_TOOL',
});

/** An error from ORION. `code` is stable; `message` is for people. */
export class OrionError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'OrionError';
    this.code = code;
  }
}

const MAX_REQUEST_ID = 0xffffffff;

/** The Cache Storage cache the worker keeps model files in (orion_web::MODEL_CACHE). */
const MODEL_CACHE = 'orion-models-v1';

/**
 * How long a started worker may take to load its wasm (not its models) before it counts as hung:
 * in Chromium a module worker has been seen never to finish loading its imports, and a fresh
 * worker then starts normally.
 */
const DEFAULT_START_TIMEOUT_MS = 30_000;

/** The orchestrator, running in a dedicated module Worker. Create it with `Orion.create()`. */
export class Orion {
  #options;
  #worker = null;
  #ready = null;
  #isReady = false;
  #pending = new Map();
  #nextId = 1;
  #listeners = new Map();
  #closed = false;
  #starts = 0;
  #loadTimer = null;
  #loadTimedOut = false;
  /** Page-defined tasks by name: what the worker is told again after a restart, and the code. */
  #tasks = new Map();
  /** Runs of page task code in flight, by run id: their AbortControllers. */
  #runs = new Map();
  /** Generations in flight, by request id: where their `llm_token` pieces go. */
  #generations = new Map();
  /** `ask`s in flight, by request id: their `onStatus` / `onToken` callbacks. */
  #asks = new Map();
  /** Calls of the page's `llm` function and tools in flight, by call id: their AbortControllers. */
  #hostCalls = new Map();
  /** `navigator.storage.persist()`, asked once at create: whether it was granted, or null. */
  #persist = Promise.resolve(null);
  /** `backups_export` requests in flight, by request id: the parts received so far. */
  #exports = new Map();

  constructor(options, token) {
    if (token !== CREATE) throw new TypeError('use `await Orion.create(options)`');
    this.#options = options;
    /** Model files cached for offline use. */
    this.models = Object.freeze({
      /** Deletes the cached model files; the next start downloads them again. */
      clearCache: async () => {
        if (!globalThis.caches) return false;
        return globalThis.caches.delete(MODEL_CACHE);
      },
    });
    /** What ORION remembers, in IndexedDB, searchable by meaning (see `index.d.ts`). */
    this.memory = Object.freeze({
      add: async (text, options = {}) => {
        const { kind, meta } = pickOptions('memory.add', options, ['kind', 'meta']);
        const request = { type: 'memory_add', text: checkText(text, 'text') };
        if (kind !== undefined) request.kind = kind;
        if (meta !== undefined) request.meta = checkMeta(meta, 'meta');
        return this.#call(request);
      },
      addMany: async (items) => {
        if (!Array.isArray(items)) {
          throw new OrionError(ErrorCode.INVALID_INPUT, 'invalid `items`: must be an array of {text, kind?, meta?}');
        }
        const checked = items.map((item, i) => {
          if (item === null || typeof item !== 'object') {
            throw new OrionError(ErrorCode.INVALID_INPUT, `invalid \`items[${i}]\`: must be an object {text, kind?, meta?}`);
          }
          const entry = { text: checkText(item.text, `items[${i}].text`) };
          if (item.kind !== undefined) entry.kind = item.kind;
          if (item.meta !== undefined) entry.meta = checkMeta(item.meta, `items[${i}].meta`);
          return entry;
        });
        return this.#call({ type: 'memory_add_many', items: checked });
      },
      get: async (id) => this.#call({ type: 'memory_get', memoryId: id }),
      delete: async (id) => this.#call({ type: 'memory_delete', memoryId: id }),
      list: async (options = {}) => this.#call({ type: 'memory_list', ...pickOptions('memory.list', options, ['kind', 'limit', 'after']) }),
      search: async (query, options = {}) => this.#call({
        type: 'memory_search',
        query: checkText(query, 'query'),
        ...pickOptions('memory.search', options, ['k', 'minSimilarity', 'kind']),
      }),
      purge: async (options = {}) => this.#call({ type: 'memory_purge', ...pickOptions('memory.purge', options, ['kind']) }),
      stats: async () => this.#call({ type: 'memory_stats' }),
    });
    /** Background work: queue jobs, checkpointed workflows and schedules (see `index.d.ts`). */
    const simple = Object.freeze({
      define: async (name, handler, options = {}) => {
        if (typeof handler !== 'function') throw new OrionError(ErrorCode.INVALID_INPUT, 'invalid `handler`: must be a function');
        const { schema, concurrency } = pickOptions('tasks.simple.define', options, ['schema', 'concurrency']);
        return this.#define({ name, kind: 'queue', schema, concurrency }, { job: handler });
      },
      schedule: async (name, payload = null, options = {}) => this.#call({
        type: 'tasks_schedule',
        source: 'queue',
        name,
        payload: checkMeta(payload, 'payload'),
        options: pickOptions('tasks.simple.schedule', options, JOB_OPTIONS),
      }),
    });
    const complex = Object.freeze({
      define: async (name, definition) => {
        if (definition === null || typeof definition !== 'object') {
          throw new OrionError(ErrorCode.INVALID_INPUT, 'invalid `definition`: must be {steps, schema?}');
        }
        const { steps, schema } = pickOptions('tasks.complex.define', definition, ['steps', 'schema']);
        if (!Array.isArray(steps)) throw new OrionError(ErrorCode.INVALID_INPUT, 'invalid `steps`: must be an array of {name, run, compensate?, retry?, timeout?}');
        const code = new Map();
        const wire = steps.map((step, i) => {
          if (step === null || typeof step !== 'object' || typeof step.run !== 'function') {
            throw new OrionError(ErrorCode.INVALID_INPUT, `invalid \`steps[${i}].run\`: must be a function`);
          }
          if (step.compensate !== undefined && typeof step.compensate !== 'function') {
            throw new OrionError(ErrorCode.INVALID_INPUT, `invalid \`steps[${i}].compensate\`: must be a function`);
          }
          const { name: stepName, retry, timeout } = pickOptions(`tasks.complex.define steps[${i}]`, step, ['name', 'run', 'compensate', 'retry', 'timeout']);
          code.set(stepName, step);
          const entry = { name: stepName, compensate: typeof step.compensate === 'function' };
          if (retry !== undefined) entry.retry = retry;
          if (timeout !== undefined) entry.timeout = timeout;
          return entry;
        });
        return this.#define({ name, kind: 'workflow', schema, steps: wire }, { steps: code });
      },
      schedule: async (name, payload = null, options = {}) => this.#call({
        type: 'tasks_schedule',
        source: 'workflow',
        name,
        payload: checkMeta(payload, 'payload'),
        options: pickOptions('tasks.complex.schedule', options, ['workflowType', 'workflowId', 'retry', 'timeout', 'stepTimeout']),
      }),
      signal: async (id, name, payload = null) => this.#call({ type: 'tasks_signal', taskId: id, name, payload: checkMeta(payload, 'payload') }),
    });
    this.tasks = Object.freeze({
      simple,
      complex,
      status: async (id) => this.#call({ type: 'tasks_status', taskId: id }),
      cancel: async (id) => this.#call({ type: 'tasks_cancel', taskId: id }),
      pause: async (id) => this.#call({ type: 'tasks_pause', taskId: id }),
      resume: async (id) => this.#call({ type: 'tasks_resume', taskId: id }),
      retry: async (id) => this.#call({ type: 'tasks_retry', taskId: id }),
      list: async (filter = {}) => this.#call({
        type: 'tasks_list',
        filter: pickOptions('tasks.list', filter, ['source', 'state', 'name', 'limit', 'after']),
      }),
      counts: async () => this.#call({ type: 'tasks_counts' }),
      pauseQueue: async (name) => this.#call({ type: 'tasks_pause_queue', name, paused: true }),
      resumeQueue: async (name) => this.#call({ type: 'tasks_pause_queue', name, paused: false }),
      monitoring: Object.freeze({
        getMetrics: async (options = {}) => this.#call({ type: 'tasks_metrics', ...pickOptions('tasks.monitoring.getMetrics', options, ['windowMs']) }),
        configureAlerts: async (rules) => this.#call({ type: 'tasks_configure_alerts', rules }),
      }),
      schedules: Object.freeze({
        upsert: async (id, spec, template) => this.#call({ type: 'tasks_upsert_schedule', scheduleId: id, spec, template }),
        remove: async (id) => this.#call({ type: 'tasks_remove_schedule', scheduleId: id }),
        list: async () => this.#call({ type: 'tasks_list_schedules' }),
      }),
    });
    /** Backups of the memories, kept in IndexedDB (see `index.d.ts`). */
    this.backups = Object.freeze({
      create: async (options = {}) => this.#call({ type: 'backups_create', ...pickOptions('backups.create', options, ['label']) }),
      list: async () => this.#call({ type: 'backups_list' }),
      stats: async () => this.#call({ type: 'backups_stats' }),
      verify: async (id) => this.#call({ type: 'backups_verify', backupId: id }),
      export: async (id) => {
        // Each part decoded, then its bytes let go: the buffers and the text are not all held.
        const parts = await this.#exportParts(id);
        const decoder = new TextDecoder();
        const texts = parts.map((part, i) => {
          parts[i] = null;
          return decoder.decode(part);
        });
        return texts.join('');
      },
      delete: async (id) => this.#call({ type: 'backups_delete', backupId: id }),
      restore: async (id, options = {}) => this.#call({
        type: 'backups_restore',
        backupId: id,
        options: pickOptions('backups.restore', options, RESTORE_OPTIONS),
      }),
      import: async (source, options = {}) => {
        const picked = pickOptions('backups.import', options, RESTORE_OPTIONS);
        if (typeof source === 'string') return this.#call({ type: 'backups_import', text: textPieces(source), options: picked });
        if (typeof Blob !== 'undefined' && source instanceof Blob) {
          // The file's bytes, moved to the worker (transferred, not copied): never a string here.
          const bytes = await source.arrayBuffer();
          return this.#call({ type: 'backups_import', bytes, options: picked }, undefined, [bytes]);
        }
        throw new OrionError(ErrorCode.INVALID_INPUT, 'invalid `text`: backups.import takes a string, a File or a Blob');
      },
      download: async (id) => {
        const [info] = id === undefined ? [] : (await this.#call({ type: 'backups_list' })).filter((backup) => backup.id === id);
        // A Blob of the parts' bytes: no string of the file, in the worker or here.
        const parts = await this.#exportParts(id);
        const date = new Date(info?.createdAt ?? Date.now()).toISOString().replace(/[:.]/g, '-');
        const name = `orion-backup-${date}.json`;
        const url = URL.createObjectURL(new Blob(parts, { type: 'application/json' }));
        try {
          const link = Object.assign(document.createElement('a'), { href: url, download: name });
          link.click();
        } finally {
          setTimeout(() => URL.revokeObjectURL(url), 0);
        }
        return name;
      },
    });
    /** Answers a question through tools, memory and the model (see `index.d.ts`). */
    this.ask = async (query, options = {}) => {
      if (typeof query !== 'string') throw new OrionError(ErrorCode.INVALID_INPUT, 'invalid `query`: must be a string');
      const { signal, onStatus, onToken, conversationId, timeZone } = pickOptions('ask', options, ['signal', 'onStatus', 'onToken', 'conversationId', 'timeZone']);
      const request = { query, timeZone: timeZone ?? localTimeZone() };
      if (conversationId !== undefined) request.conversationId = conversationId;
      const listener = {
        status: typeof onStatus === 'function' ? onStatus : null,
        token: typeof onToken === 'function' ? onToken : null,
      };
      return this.#stream({ type: 'ask', request }, signal, 'ask_cancel', (id) => this.#asks.set(id, listener), (id) => this.#asks.delete(id), 'the question');
    };
    /** Text generation: the page's `llm` function when given, else the local model (see `index.d.ts`). */
    this.llm = Object.freeze({
      generate: async (input, options = {}) => {
        const { signal, onToken, ...rest } = pickOptions('llm.generate', options, [...GENERATE_FIELDS, 'signal', 'onToken']);
        const request = { ...generateRequest(input, 'prompt'), ...rest };
        const onPiece = typeof onToken === 'function' ? (_index, text) => onToken(text) : null;
        return this.#generate({ type: 'llm_generate', request }, signal, onPiece);
      },
      generateMany: async (inputs, options = {}) => {
        if (!Array.isArray(inputs)) {
          throw new OrionError(ErrorCode.INVALID_INPUT, 'invalid `requests`: must be an array of prompts or requests');
        }
        const { signal, onToken } = pickOptions('llm.generateMany', options, ['signal', 'onToken']);
        const requests = inputs.map((input, i) => generateRequest(input, `requests[${i}]`));
        const onPiece = typeof onToken === 'function' ? (index, text) => onToken(index, text) : null;
        return this.#generate({ type: 'llm_generate_many', requests }, signal, onPiece);
      },
    });
    /** Debug-only requests; the worker refuses them unless created with `debug: true`. */
    this.debug = Object.freeze({
      crash: () => this.#call({ type: 'crash' }),
    });
  }

  /** Starts the worker and waits until it is ready. */
  static async create(options = {}) {
    if (options === null || typeof options !== 'object') {
      throw new OrionError(ErrorCode.INVALID_MESSAGE, 'Orion.create(options): options must be an object');
    }
    const timeout = options.startTimeoutMs;
    if (timeout !== undefined && !(Number.isFinite(timeout) && timeout > 0)) {
      throw new OrionError(ErrorCode.INVALID_MESSAGE, 'Orion.create(options): `startTimeoutMs` must be a positive number of ms');
    }
    if (options.llm !== undefined && typeof options.llm !== 'function') {
      throw new OrionError(ErrorCode.INVALID_INPUT, 'invalid `llm`: must be a function ({system, prompt, …, signal}) => string | AsyncIterable<string>');
    }
    if (options.llmOptions !== undefined) pickOptions('Orion.create llmOptions', options.llmOptions, LLM_OPTIONS);
    if (options.tools !== undefined) checkTools(options.tools);
    const orion = new Orion({ ...options }, CREATE);
    orion.#persist = requestPersistence();
    try {
      await orion.#start();
    } catch (error) {
      // A worker that never loaded is replaced once; any other failure is final.
      if (!orion.#loadTimedOut || orion.#closed) throw error;
      await orion.#start();
    }
    return orion;
  }

  /** Round-trips `payload` (any structured-cloneable JSON value) through the worker. */
  ping(payload = null) {
    return this.#call({ type: 'ping', payload });
  }

  /**
   * The WorkerHealthMonitor report: the worst status and one row per component, with the
   * origin's storage (`navigator.storage.persist()` asked at create, and `estimate()`).
   */
  async health() {
    const [report, storage] = await Promise.all([this.#call({ type: 'health' }), storageHealth(this.#persist)]);
    return { ...report, storage };
  }

  /** Crate and protocol versions of the worker, and this client's version. */
  async version() {
    const worker = await this.#call({ type: 'version' });
    return { ...worker, client: CLIENT_VERSION };
  }

  /**
   * Sentence embeddings of `texts` (strings), one Float32Array each, computed in the worker.
   * Vectors are unit length; compare only vectors from the same model version (see `profile()`).
   */
  async embed(texts, options = {}) {
    if (!Array.isArray(texts)) {
      throw new OrionError(ErrorCode.INVALID_MESSAGE, 'embed(texts): texts must be an array of strings');
    }
    if (options === null || typeof options !== 'object') {
      throw new OrionError(ErrorCode.INVALID_MESSAGE, 'embed(texts, options): options must be an object');
    }
    const request = { type: 'embed', texts };
    if (options.profile !== undefined) request.profile = options.profile;
    const { vectors } = await this.#call(request);
    return vectors.map((vector) => Float32Array.from(vector));
  }

  /** The device profile (requested, chosen, active), the device facts and the embedder in use. */
  profile() {
    return this.#call({ type: 'profile' });
  }

  /**
   * Subscribes to `name`: 'event' (every worker event), 'breaker_transition',
   * 'health_transition', 'model_progress', 'embedder_fallback', 'memory_progress',
   * 'memory_index', 'leadership', or 'worker' (lifecycle: starting, ready, crashed, closed).
   * Returns a function that unsubscribes.
   */
  on(name, listener) {
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    const set = this.#listeners.get(name) ?? new Set();
    set.add(listener);
    this.#listeners.set(name, set);
    return () => set.delete(listener);
  }

  /** Terminates the worker. Pending calls reject with ERR_CLOSED; later calls too. */
  async close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopWorker(new OrionError(ErrorCode.CLOSED, 'the orchestrator was closed'));
    this.#emit('worker', { state: 'closed' });
  }

  #emit(name, detail) {
    for (const listener of this.#listeners.get(name) ?? []) {
      try {
        listener(detail);
      } catch (error) {
        console.error('ORION: a listener threw', error);
      }
    }
  }

  #start() {
    const url = this.#options.workerUrl ?? new URL('./worker.js', import.meta.url);
    let worker;
    try {
      worker = new Worker(url, { type: 'module', name: 'orion' });
    } catch (error) {
      return Promise.reject(new OrionError(ErrorCode.WORKER_START, `could not start the worker: ${error.message}`));
    }
    this.#starts += 1;
    this.#worker = worker;
    this.#isReady = false;
    this.#loadTimedOut = false;
    const timeoutMs = this.#options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
    clearTimeout(this.#loadTimer);
    this.#loadTimer = setTimeout(() => {
      if (worker !== this.#worker) return;
      this.#loadTimedOut = true;
      this.#onDeath(worker, ErrorCode.WORKER_START, `its wasm did not load within ${timeoutMs} ms`);
    }, timeoutMs);
    this.#emit('worker', { state: 'starting', restart: this.#starts > 1 });
    worker.onmessage = (event) => this.#onMessage(worker, event.data);
    worker.onerror = (event) => {
      event.preventDefault();
      const code = this.#isReady ? ErrorCode.WORKER_CRASHED : ErrorCode.WORKER_START;
      this.#onDeath(worker, code, event.message || 'the worker failed (its script may not have loaded)');
    };
    worker.onmessageerror = () => console.error('ORION: a message from the worker could not be deserialized');
    const ready = this.#send(worker, this.#initRequest())
      .then(async (version) => {
        // A fresh worker (first start or after a crash) learns the page's tasks before any call.
        for (const { wire } of this.#tasks.values()) await this.#send(worker, { type: 'tasks_define', task: wire });
        return version;
      })
      .then((version) => {
        if (this.#worker === worker) this.#isReady = true;
        this.#emit('worker', { state: 'ready', version });
        return version;
      });
    this.#ready = ready;
    return ready;
  }

  #initRequest() {
    const { debug = false, breaker, health, profile, models, database, memory, tasks, llm, llmOptions, tools, ask, backups } = this.#options;
    const request = { type: 'init', debug: Boolean(debug) };
    if (tasks !== undefined) request.tasks = tasks;
    if (ask !== undefined) request.ask = ask;
    if (backups !== undefined) request.backups = backups;
    if (database !== undefined) request.database = database;
    if (memory !== undefined) request.memory = memory;
    if (breaker) request.breaker = breaker;
    if (health) request.health = health;
    if (profile) request.profile = profile;
    if (models?.embedding) request.models = { embedding: embeddingSource(models.embedding) };
    if (models?.llm) request.models = { ...request.models, llm: llmSource(models.llm) };
    const { weights, maxContext, timeoutMs, attempts, backoffMs } = llmOptions ?? {};
    const settings = pickOptions('llmOptions', { weights, maxContext }, ['weights', 'maxContext']);
    if (typeof llm === 'function') settings.host = pickOptions('llmOptions', { timeoutMs, attempts, backoffMs }, ['timeoutMs', 'attempts', 'backoffMs']);
    if (Object.keys(settings).length > 0) request.llm = settings;
    // The functions stay here; the worker gets the specs and calls back with `tool_host_call`.
    if (tools?.length) request.tools = tools.map(({ name, description, examples, parameters }) => (examples === undefined ? { name, description, parameters } : { name, description, examples, parameters }));
    return request;
  }

  // Runs a generation request: its `llm_token` pieces go to `onPiece(index, text)`, and an abort
  // of `signal` sends `llm_cancel` (the request then resolves with `finish: 'cancelled'`).
  #generate(request, signal, onPiece) {
    return this.#stream(request, signal, 'llm_cancel', (id) => this.#generations.set(id, onPiece), (id) => this.#generations.delete(id), 'the generation');
  }

  // Runs a request whose events stream back: `track(id)` and `untrack(id)` bracket it, and an
  // abort of `signal` sends `cancelType` with its id.
  async #stream(request, signal, cancelType, track, untrack, what) {
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new OrionError(ErrorCode.INVALID_INPUT, 'invalid `signal`: must be an AbortSignal');
    }
    if (signal?.aborted) throw new OrionError(ErrorCode.CANCELLED, `cancelled: the signal was aborted before ${what} started`);
    let sent = null;
    const cancel = () => {
      if (sent && sent.worker === this.#worker) this.#send(sent.worker, { type: cancelType, requestId: sent.id }).catch(() => {});
    };
    signal?.addEventListener('abort', cancel, { once: true });
    try {
      return await this.#call(request, (worker, id) => {
        sent = { worker, id };
        track(id);
        if (signal?.aborted) cancel();
      });
    } finally {
      signal?.removeEventListener('abort', cancel);
      if (sent) untrack(sent.id);
    }
  }

  // `transfer`: objects moved to the worker with the request (postMessage's transfer list).
  async #call(request, track, transfer) {
    if (this.#closed) throw new OrionError(ErrorCode.CLOSED, 'the orchestrator is closed');
    // After a crash the next call starts a fresh worker; calls during a start wait for it.
    if (this.#worker) await this.#ready;
    else await this.#start();
    if (this.#closed) throw new OrionError(ErrorCode.CLOSED, 'the orchestrator is closed');
    const worker = this.#worker;
    if (!worker) throw new OrionError(ErrorCode.WORKER_CRASHED, 'the worker crashed before the call was sent');
    return this.#send(worker, request, track, transfer);
  }

  // `track(worker, id)` learns the request's id once it is posted.
  #send(worker, request, track, transfer = []) {
    return new Promise((resolve, reject) => {
      const id = this.#nextId;
      this.#nextId = id >= MAX_REQUEST_ID ? 1 : id + 1;
      this.#pending.set(id, { resolve, reject });
      try {
        worker.postMessage({ ...request, v: PROTOCOL_VERSION, id }, transfer);
        track?.(worker, id);
      } catch (error) {
        this.#pending.delete(id);
        reject(new OrionError(ErrorCode.INVALID_MESSAGE, `the request could not be sent to the worker: ${error.message}`));
      }
    });
  }

  #onMessage(worker, message) {
    if (worker !== this.#worker || message === null || typeof message !== 'object') return;
    // Any message means the worker script runs; `loaded` is the first one it posts.
    clearTimeout(this.#loadTimer);
    switch (message.type) {
      case 'loaded':
        return;
      case 'response':
      case 'error': {
        const call = this.#pending.get(message.id);
        if (!call) {
          if (message.type === 'error') console.error('ORION: the worker refused a message:', message.error);
          return;
        }
        this.#pending.delete(message.id);
        if (message.type === 'response') call.resolve(message.result);
        else call.reject(new OrionError(message.error.code, message.error.message));
        return;
      }
      case 'event':
        // A part of an export goes to its request only: subscribers get `backup_progress`.
        if (message.event.kind === 'backup_part') return this.#onExportPart(message.event);
        if (message.event.kind === 'task_run') this.#runTask(message.event);
        else if (message.event.kind === 'task_abort') this.#runs.get(message.event.runId)?.abort(new DOMException('the task was cancelled, timed out or lost its lease', 'AbortError'));
        else if (message.event.kind === 'llm_token') this.#onToken(message.event);
        else if (message.event.kind === 'ask_status') this.#onAsk(message.event, 'status');
        else if (message.event.kind === 'ask_token') this.#onAsk(message.event, 'token');
        else if (message.event.kind === 'llm_host_call') this.#runHostLlm(message.event);
        else if (message.event.kind === 'tool_host_call') this.#runHostTool(message.event);
        else if (message.event.kind === 'tool_host_abort') this.#hostCalls.get(message.event.callId)?.abort(new DOMException('the worker stopped waiting for this tool call (timed out or cancelled)', 'AbortError'));
        else if (message.event.kind === 'llm_host_abort') this.#hostCalls.get(message.event.callId)?.abort(new DOMException('the worker stopped waiting for this LLM call (timed out or cancelled)', 'AbortError'));
        this.#emit('event', message.event);
        this.#emit(message.event.kind, message.event);
        if (PROGRESS_EVENTS.has(message.event.kind)) this.#options.onProgress?.(message.event);
        return;
      case 'crashed':
        this.#onDeath(worker, ErrorCode.WORKER_CRASHED, message.message);
        return;
      case 'fatal':
        this.#onDeath(worker, message.error.code, message.error.message);
        return;
      default:
        console.error('ORION: unknown message from the worker:', message);
    }
  }

  /**
   * A backup's file in the parts the worker sends as it reads (or takes) them, as UTF-8 bytes
   * (`backup_part` events ahead of the answer, which says how many there are; `backup_progress`
   * events meanwhile).
   */
  async #exportParts(id) {
    const parts = [];
    const request = { type: 'backups_export', ...(id === undefined ? {} : { backupId: id }) };
    // No signal: an export is not cancelled, so no cancel request type either.
    const { parts: count } = await this.#stream(request, undefined, null, (requestId) => this.#exports.set(requestId, parts), (requestId) => this.#exports.delete(requestId), 'the export');
    if (parts.length !== count || parts.some((part) => !(part instanceof Uint8Array))) {
      throw new OrionError(ErrorCode.INTERNAL, `the export sent ${parts.length} of its ${count} parts`);
    }
    return parts;
  }

  #onExportPart({ requestId, index, bytes }) {
    const parts = this.#exports.get(requestId);
    // Out of order, a part is refused by the check above (a hole is not a Uint8Array).
    if (parts && index === parts.length) parts.push(bytes);
    else if (parts) parts[index] = undefined;
  }

  async #define(wire, code) {
    for (const key of Object.keys(wire)) if (wire[key] === undefined) delete wire[key];
    const previous = this.#tasks.get(wire.name);
    this.#tasks.set(wire.name, { wire, ...code });
    try {
      return await this.#call({ type: 'tasks_define', task: wire });
    } catch (error) {
      if (previous) this.#tasks.set(wire.name, previous);
      else this.#tasks.delete(wire.name);
      throw error;
    }
  }

  // Runs page task code for a `task_run` event and answers with `tasks_result`.
  async #runTask(run) {
    const worker = this.#worker;
    const controller = new AbortController();
    this.#runs.set(run.runId, controller);
    const task = this.#tasks.get(run.name);
    const step = task?.steps?.get(run.step);
    const code = run.role === 'job' ? task?.job : run.role === 'step' ? step?.run : step?.compensate;
    const context = {
      taskId: run.taskId,
      name: run.name,
      attempt: run.attempt,
      idempotencyKey: run.idempotencyKey,
      signal: controller.signal,
    };
    if (run.role === 'job') context.progress = (value) => this.#call({ type: 'tasks_progress', runId: run.runId, progress: value });
    if (run.role !== 'job') Object.assign(context, { step: run.step, results: run.results ?? {} });
    if (run.role === 'step') Object.assign(context, { cursor: run.cursor ?? null, checkpoint: (cursor) => this.#call({ type: 'tasks_progress', runId: run.runId, progress: cursor }) });
    if (run.role === 'compensation') context.stepResult = run.stepResult ?? null;
    let answer;
    try {
      if (typeof code !== 'function') throw Object.assign(new Error(`this page defines no code for ${run.role} \`${run.step ?? run.name}\``), { retryable: false });
      const value = await code(run.payload, context);
      answer = { value: checkMeta(value === undefined ? null : value, 'the task\'s result') };
    } catch (error) {
      answer = { error: { message: String(error?.message ?? error), retryable: error?.retryable !== false } };
    } finally {
      this.#runs.delete(run.runId);
    }
    // Aborted runs are over in the worker; a dead worker's runs are run again by the next one.
    if (controller.signal.aborted || worker !== this.#worker) return;
    try {
      await this.#send(worker, { type: 'tasks_result', runId: run.runId, ...answer });
    } catch (error) {
      if (error?.code !== ErrorCode.INVALID_INPUT) console.error('ORION: a task result could not be delivered', error);
    }
  }

  // An `ask`'s progress goes to its `onStatus` / `onToken`; a throwing callback is reported,
  // never allowed to break the stream.
  #onAsk(event, which) {
    const callback = this.#asks.get(event.requestId)?.[which];
    if (!callback) return;
    try {
      if (which === 'status') callback({ stage: event.stage, message: event.message });
      else callback(event.text, event.agent);
    } catch (error) {
      console.error(`ORION: the ask's on${which === 'status' ? 'Status' : 'Token'} callback threw:`, error);
    }
  }

  #onToken({ requestId, index, text }) {
    const onPiece = this.#generations.get(requestId);
    if (!onPiece) return;
    try {
      onPiece(index, text);
    } catch (error) {
      console.error('ORION: an onToken callback threw', error);
    }
  }

  // Runs the page's `llm` function for an `llm_host_call` event; streams an async iterable's
  // pieces with `llm_host_chunk` and ends with `llm_host_result`.
  async #runHostLlm(call) {
    const worker = this.#worker;
    const controller = new AbortController();
    this.#hostCalls.set(call.callId, controller);
    const live = () => !controller.signal.aborted && worker === this.#worker;
    const send = (message) => {
      if (!live()) return;
      this.#send(worker, message).catch((error) => {
        if (error?.code !== ErrorCode.INVALID_INPUT) console.error('ORION: an LLM answer could not be delivered', error);
      });
    };
    const fatal = (message) => Object.assign(new TypeError(message), { retryable: false });
    let answer;
    try {
      const llm = this.#options.llm;
      if (typeof llm !== 'function') throw fatal('this page passed no `llm` function');
      const result = await llm({ ...call.request, attempt: call.attempt, signal: controller.signal });
      if (typeof result === 'string') {
        answer = { text: result };
      } else if (result !== null && typeof result?.[Symbol.asyncIterator] === 'function') {
        for await (const piece of result) {
          if (!live()) break;
          if (typeof piece !== 'string') throw fatal('the `llm` function\'s iterable must yield strings');
          send({ type: 'llm_host_chunk', callId: call.callId, text: piece });
        }
        answer = {};
      } else {
        throw fatal('the `llm` function must return a string or an async iterable of strings');
      }
    } catch (error) {
      answer = { error: { message: String(error?.message ?? error), retryable: error?.retryable !== false } };
    } finally {
      this.#hostCalls.delete(call.callId);
    }
    send({ type: 'llm_host_result', callId: call.callId, ...answer });
  }

  // Runs one of the page's tools for a `tool_host_call` and answers with `tool_host_result`.
  async #runHostTool(call) {
    const worker = this.#worker;
    const controller = new AbortController();
    this.#hostCalls.set(call.callId, controller);
    let answer;
    try {
      const tool = this.#options.tools?.find((candidate) => candidate.name === call.tool);
      if (!tool) throw Object.assign(new TypeError(`this page has no tool \`${call.tool}\``), { retryable: false });
      const value = await tool.run(call.arguments, { signal: controller.signal });
      answer = { value: value === undefined ? null : value };
    } catch (error) {
      answer = { error: { message: String(error?.message ?? error), retryable: error?.retryable !== false } };
    } finally {
      this.#hostCalls.delete(call.callId);
    }
    if (controller.signal.aborted || worker !== this.#worker) return;
    this.#send(worker, { type: 'tool_host_result', callId: call.callId, ...answer }).catch((error) => {
      if (error?.code !== ErrorCode.INVALID_INPUT) console.error('ORION: a tool result could not be delivered', error);
    });
  }

  #onDeath(worker, code, reason) {
    if (worker !== this.#worker) return;
    this.#stopWorker(new OrionError(code, `the worker died: ${reason}`));
    this.#emit('worker', { state: 'crashed', code, reason });
  }

  #stopWorker(error) {
    clearTimeout(this.#loadTimer);
    for (const controller of this.#runs.values()) controller.abort(error);
    this.#runs.clear();
    for (const controller of this.#hostCalls.values()) controller.abort(error);
    this.#hostCalls.clear();
    this.#generations.clear();
    this.#exports.clear();
    this.#worker?.terminate();
    this.#worker = null;
    this.#ready = null;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const call of pending) call.reject(error);
  }
}

const CREATE = Symbol('Orion.create');

/** The options of `tasks.simple.schedule` (orion_core::jobs::JobOptions). */
const JOB_OPTIONS = ['priority', 'delay', 'attempts', 'backoff', 'timeout', 'jobId', 'debounce', 'removeOnComplete', 'removeOnFail'];

/** The fields of a generation request besides `prompt` (orion_core::generation::GenerateRequest). */
const GENERATE_FIELDS = ['system', 'history', 'conversationId', 'agent', 'temperature', 'topP', 'topK', 'repetitionPenalty', 'seed', 'maxTokens', 'stop'];

/** `Orion.create({ llmOptions })`: the local model's load options and the host function's limits. */
const LLM_OPTIONS = ['weights', 'maxContext', 'timeoutMs', 'attempts', 'backoffMs'];

/** A generation request from a prompt string or a request object; `field` names it in errors. */
/** Checks `Orion.create({ tools })`: each a spec with a `run` function (the worker checks the rest). */
function checkTools(tools) {
  if (!Array.isArray(tools)) throw new OrionError(ErrorCode.INVALID_INPUT, 'invalid `tools`: must be an array of {name, description, parameters, run}');
  tools.forEach((tool, i) => {
    if (tool === null || typeof tool !== 'object') throw new OrionError(ErrorCode.INVALID_INPUT, `invalid \`tools[${i}]\`: must be an object`);
    pickOptions(`tools[${i}]`, tool, ['name', 'description', 'examples', 'parameters', 'run']);
    if (typeof tool.run !== 'function') throw new OrionError(ErrorCode.INVALID_INPUT, `invalid \`tools[${i}].run\`: must be a function (args, {signal}) => result`);
  });
}

/** The page's IANA time zone, for date and time answers (UTC when `Intl` cannot tell). */
function localTimeZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

function generateRequest(input, field) {
  if (typeof input === 'string') return { prompt: input };
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new OrionError(ErrorCode.INVALID_INPUT, `invalid \`${field}\`: must be a string or a request {prompt, system?, …}`);
  }
  return pickOptions(field === 'prompt' ? 'llm.generate' : `llm.generateMany ${field}`, input, ['prompt', ...GENERATE_FIELDS]);
}

/** Events also delivered to `onProgress`. */
const PROGRESS_EVENTS = new Set(['model_progress', 'memory_progress', 'memory_index', 'backup_progress', 'embedding_migration']);

// The named options of `method`, without undefined ones; an unknown option is an error rather
// than silently ignored (or, worse, sent as a protocol field).
function pickOptions(method, options, allowed) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new OrionError(ErrorCode.INVALID_INPUT, `invalid \`options\` of ${method}: must be an object`);
  }
  const picked = {};
  for (const [key, value] of Object.entries(options)) {
    if (!allowed.includes(key)) {
      throw new OrionError(ErrorCode.INVALID_INPUT, `invalid \`${key}\`: ${method} takes ${allowed.join(', ')}`);
    }
    if (value !== undefined) picked[key] = value;
  }
  return picked;
}

const RESTORE_OPTIONS = ['clearExisting', 'onConflict'];

/**
 * Asks the browser to keep this origin's storage (IndexedDB: memories, backups) under storage
 * pressure rather than evict it: true if granted, false if refused, null where the API is missing
 * or failed. Only a page may ask (workers cannot); the answer goes into `health().storage`.
 */
async function requestPersistence() {
  try {
    if (typeof navigator?.storage?.persist !== 'function') return null;
    return await navigator.storage.persist();
  } catch {
    return null;
  }
}

/** `health().storage`: the persistence asked for at create, and what is persisted and used now. */
async function storageHealth(persist) {
  const storage = typeof navigator === 'undefined' ? undefined : navigator.storage;
  const [granted, persisted, estimate] = await Promise.all([
    persist,
    storage?.persisted?.().catch(() => null) ?? null,
    storage?.estimate?.().catch(() => null) ?? null,
  ]);
  return {
    persistGranted: granted,
    persisted: persisted ?? null,
    usageBytes: estimate?.usage ?? null,
    quotaBytes: estimate?.quota ?? null,
  };
}

/** Strings in a message are at most 2^20 UTF-16 units: a larger text goes in pieces, never cut
 * between the two halves of a surrogate pair (the worker joins them in order). */
const TEXT_PIECE = 1 << 19;
function textPieces(text) {
  if (text.length <= TEXT_PIECE) return text;
  const pieces = [];
  let start = 0;
  while (start < text.length) {
    let end = Math.min(start + TEXT_PIECE, text.length);
    const last = text.charCodeAt(end - 1);
    if (end < text.length && last >= 0xd800 && last <= 0xdbff) end -= 1;
    pieces.push(text.slice(start, end));
    start = end;
  }
  return pieces;
}

function checkText(text, field) {
  if (typeof text !== 'string') {
    throw new OrionError(ErrorCode.INVALID_INPUT, `invalid \`${field}\`: must be a string`);
  }
  return text;
}

// `meta` must survive JSON: plain objects, arrays, strings, finite numbers, booleans, null.
function checkMeta(meta, field) {
  const check = (value, path, depth) => {
    if (depth > 32) throw new OrionError(ErrorCode.INVALID_INPUT, `invalid \`${path}\`: nested too deeply (or cyclic)`);
    if (value === null || typeof value === 'string' || typeof value === 'boolean') return;
    if (typeof value === 'number') {
      if (Number.isFinite(value)) return;
      throw new OrionError(ErrorCode.INVALID_INPUT, `invalid \`${path}\`: ${value} is not a JSON number`);
    }
    if (Array.isArray(value)) {
      value.forEach((item, i) => check(item, `${path}[${i}]`, depth + 1));
      return;
    }
    const proto = typeof value === 'object' ? Object.getPrototypeOf(value) : undefined;
    if (proto === Object.prototype || proto === null) {
      for (const [key, item] of Object.entries(value)) check(item, `${path}.${key}`, depth + 1);
      return;
    }
    const kind = typeof value === 'object' ? value.constructor?.name ?? 'object' : typeof value;
    throw new OrionError(ErrorCode.INVALID_INPUT, `invalid \`${path}\`: a ${kind} cannot be stored as JSON`);
  };
  check(meta, field, 0);
  return meta;
}

// `models.llm` as the protocol takes it: the GGUF file's URL resolved against the page.
function llmSource(llm) {
  const resolve = (url) => new URL(url, globalThis.location?.href).href;
  if (typeof llm === 'string' || llm instanceof URL) return resolve(llm);
  if (llm === null || typeof llm !== 'object') return llm;
  const source = { ...llm };
  if (typeof source.url === 'string' || source.url instanceof URL) source.url = resolve(source.url);
  return source;
}

// `models.embedding` as the protocol takes it. Relative URLs are the page's: they are resolved
// here, since the worker's base URL differs. Provided bytes go as they are (structured clone
// copies them; the worker takes them out of the message before decoding it).
function embeddingSource(embedding) {
  const resolve = (url) => new URL(url, globalThis.location?.href).href;
  if (typeof embedding === 'string' || embedding instanceof URL) return resolve(embedding);
  if (typeof embedding !== 'object') return embedding;
  const source = { ...embedding };
  if (typeof source.url === 'string' || source.url instanceof URL) source.url = resolve(source.url);
  return source;
}
