// Types of the orion-orchestrator package. The worker protocol they describe is defined in
// orion-core (crates/orion-core/src/protocol.rs); a test keeps the error codes here equal to it.

/** The protocol version this client speaks. */
export declare const PROTOCOL_VERSION: 1;
/** This package's version. */
export declare const CLIENT_VERSION: string;

/** Every stable error code. */
export type ErrorCode =
  | 'ERR_INVALID_MESSAGE'
  | 'ERR_MESSAGE_TOO_LARGE'
  | 'ERR_UNSUPPORTED_PROTOCOL'
  | 'ERR_INIT_ORDER'
  | 'ERR_CIRCUIT_OPEN'
  | 'ERR_DEBUG_DISABLED'
  | 'ERR_WORKER_CRASHED'
  | 'ERR_WORKER_START'
  | 'ERR_CLOSED'
  | 'ERR_MODEL_LOAD'
  | 'ERR_EMBEDDING'
  | 'ERR_INTERNAL'
  | 'ERR_INVALID_INPUT'
  | 'ERR_QUOTA'
  | 'ERR_STORE'
  | 'ERR_BACKUP_INVALID'
  | 'ERR_GENERATION'
  | 'ERR_CANCELLED'
  | 'ERR_TIMEOUT'
  | 'ERR_TOOL';

/** The codes by name, e.g. `ErrorCode.WORKER_CRASHED === 'ERR_WORKER_CRASHED'`. */
export declare const ErrorCode: Readonly<{
  INVALID_MESSAGE: 'ERR_INVALID_MESSAGE';
  MESSAGE_TOO_LARGE: 'ERR_MESSAGE_TOO_LARGE';
  UNSUPPORTED_PROTOCOL: 'ERR_UNSUPPORTED_PROTOCOL';
  INIT_ORDER: 'ERR_INIT_ORDER';
  CIRCUIT_OPEN: 'ERR_CIRCUIT_OPEN';
  DEBUG_DISABLED: 'ERR_DEBUG_DISABLED';
  WORKER_CRASHED: 'ERR_WORKER_CRASHED';
  WORKER_START: 'ERR_WORKER_START';
  CLOSED: 'ERR_CLOSED';
  MODEL_LOAD: 'ERR_MODEL_LOAD';
  EMBEDDING: 'ERR_EMBEDDING';
  INTERNAL: 'ERR_INTERNAL';
  INVALID_INPUT: 'ERR_INVALID_INPUT';
  QUOTA: 'ERR_QUOTA';
  STORE: 'ERR_STORE';
  BACKUP_INVALID: 'ERR_BACKUP_INVALID';
  GENERATION: 'ERR_GENERATION';
  CANCELLED: 'ERR_CANCELLED';
  TIMEOUT: 'ERR_TIMEOUT';
  TOOL: 'ERR_TOOL';
}>;

/** Every rejection from ORION is an OrionError. */
export declare class OrionError extends Error {
  readonly name: 'OrionError';
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string);
}

/** Circuit breaker thresholds (defaults in comments). */
export interface BreakerConfig {
  /** Consecutive failures that open a closed circuit (5). */
  failureThreshold?: number;
  /** How long an open circuit rejects calls, in ms (30000). */
  openTimeoutMs?: number;
  /** Probe calls a half-open circuit admits at once (1). */
  halfOpenMaxProbes?: number;
  /** Consecutive probe successes that close it (2). */
  successThreshold?: number;
}

/** Health thresholds (defaults in comments). */
export interface HealthConfig {
  /** Consecutive failures that make a component unhealthy (3). */
  unhealthyConsecutiveFailures?: number;
  /** An error rate above this is unhealthy (0.2). */
  unhealthyErrorRate?: number;
  /** An error rate from this up to the unhealthy rate is degraded (0.1). */
  degradedErrorRate?: number;
  /** The rolling window for error rates, in ms (60000). */
  windowMs?: number;
  /** Results needed before the error rate counts (10). */
  minSamples?: number;
  /** Silence with work pending that makes a component unhealthy, in ms (10000). */
  heartbeatTimeoutMs?: number;
  /** Results kept per component (1000). */
  maxSamples?: number;
}

export type ProfileName = 'full' | 'lite' | 'micro';

/** The roles of all-MiniLM-L6-v2's files: `config.json`, `tokenizer.json`, `model.safetensors`. */
export type ModelFileRole = 'config' | 'tokenizer' | 'weights';

/** Lowercase or uppercase hex SHA-256 per file; a file with a digest is verified before use. */
export type ModelDigests = Partial<Record<ModelFileRole, string>>;

/**
 * Where all-MiniLM-L6-v2 comes from:
 * - a base URL (string or URL) of `config.json`, `tokenizer.json` and `model.safetensors`;
 * - `{ url, sha256 }`: the same, with digests to check (a mismatch is `ERR_MODEL_LOAD`, and a cached
 *   copy that no longer matches is downloaded again);
 * - `{ files, sha256 }`: the files' bytes. They are copied to the worker and kept there for its life
 *   (about 90 MB, so that `embed(texts, { profile })` can load another precision), never cached.
 */
export type EmbeddingModelSource =
  | string
  | URL
  | { url: string | URL; sha256?: ModelDigests }
  | { files: Record<ModelFileRole, ArrayBuffer | ArrayBufferView>; sha256?: ModelDigests };

/**
 * Where the local LLM's GGUF file is (e.g. SmolLM2-135M-Instruct.Q4_1.gguf): its URL, or
 * `{ url, sha256 }` with the file's hex SHA-256 to check. It is fetched on the first generation
 * (not at `create`), with `model_progress` events, checked like the embedding model's files and
 * kept in Cache Storage for offline starts.
 */
export type LlmModelSource = string | URL | { url: string | URL; sha256?: string };

export interface ModelUrls {
  /** The embedding model, which every profile runs (micro and lite 8-bit, full f32). Without it the hashing embedder (micro) is used. */
  embedding?: EmbeddingModelSource;
  /** The local LLM. Ignored when an `llm` function is given (the function wins). */
  llm?: LlmModelSource;
}

export interface ModelProgressEvent {
  kind: 'model_progress';
  /** The file's name (`model.safetensors`, ...). */
  file: string;
  loaded: number;
  total: number | null;
  /** Whether the file came from Cache Storage rather than the network. */
  cached: boolean;
  /** Bytes so far over all the model's files. */
  overallLoaded: number;
  /** Bytes over all the model's files, once every file's size is known. */
  overallTotal: number | null;
}

export interface EmbedOptions {
  /**
   * Embed with this profile's embedder rather than the active one: `micro` is always there; `full`
   * and `lite` load on first use from the same model source (`ERR_MODEL_LOAD` when they cannot, and
   * the next call tries again). Vectors of different profiles have different versions: never compare
   * them with each other.
   */
  profile?: ProfileName;
}

export interface EmbeddingModelInfo {
  id: string;
  /** Vectors of different versions are never comparable. */
  version: string;
  dims: number;
}

export interface EmbedderFallbackEvent {
  kind: 'embedder_fallback';
  /** Why, naming the URL or provided file at fault. */
  reason: string;
  /** The error's code: `ERR_MODEL_LOAD` when the model could not be fetched, verified or parsed. */
  code: ErrorCode;
  /** The embedder now in use (micro's). */
  model: EmbeddingModelInfo;
}

export interface DeviceFacts {
  hardwareConcurrency: number | null;
  deviceMemoryGb: number | null;
  storageQuotaBytes: number | null;
  wasmSimd: boolean;
}

export interface ProfileInfo {
  requested: ProfileName | 'auto';
  /** What the device rules chose. */
  chosen: ProfileName;
  /** What runs: 'micro' after a fallback. */
  active: ProfileName;
  /** What the active profile may spend. */
  budget: { maxMemories: number };
  facts: DeviceFacts;
  embedding: EmbeddingModelInfo | null;
  fallbackReason: string | null;
}

/** What a memory is. `tool_result` memories expire after 24 hours. */
export type MemoryKind = 'conversation' | 'tool_result' | 'fact' | 'feedback';

/** A stored memory (its vector stays in the worker). */
export interface MemoryRecord {
  /** Sorts in creation order. */
  id: string;
  text: string;
  kind: MemoryKind;
  /** Milliseconds since the epoch. */
  createdAt: number;
  /** When it was added or last returned by a search. */
  lastAccessed: number;
  /** The embedder version of its vector; only vectors of the active version are searched. */
  embeddingVersion: string;
  meta: Record<string, unknown>;
}

export interface MemoryAddOptions {
  /** Default 'fact'. */
  kind?: MemoryKind;
  /** A JSON object (at most 16 KiB as JSON) kept with the memory. */
  meta?: Record<string, unknown>;
}

export interface MemorySearchOptions {
  /** How many, 1 to 100 (default 5). */
  k?: number;
  /** The least cosine similarity, -1 to 1 (default 0). */
  minSimilarity?: number;
  kind?: MemoryKind;
}

export interface MemorySearchHit {
  id: string;
  text: string;
  kind: MemoryKind;
  similarity: number;
  createdAt: number;
}

export interface MemoryListOptions {
  kind?: MemoryKind;
  /** 1 to 1000 (default 100). */
  limit?: number;
  /** The previous page's `next`. */
  after?: string;
}

export interface MemoryPage {
  items: MemoryRecord[];
  /** Pass as `after` for the next page; null on the last page. */
  next: string | null;
}

export interface MemoryStats {
  count: number;
  byKind: Record<MemoryKind, number>;
  /** Memories with a vector of the active embedder's version. */
  searchable: number;
  /** Memories embedded by another version (searchable again after re-embedding). */
  otherVersions: number;
  embeddingVersion: string;
  /** The profile's budget: past it the least recently used memories are evicted. */
  maxMemories: number;
  toolResultTtlMs: number;
  /**
   * Whether the index's saved snapshot (with the journal of changes since) lets the next start
   * load fast; false while it is missing, stale or being written. It is written in the background
   * after a read, yielding to requests, so a page about to close after a bulk import may wait for
   * it (polling `stats()`) to keep the next start fast.
   */
  indexSaved: boolean;
}

/**
 * The memory store (IndexedDB, one index per worker). Calls wait until the index has loaded at
 * start (`memory_index` events). Bad arguments reject with `ERR_INVALID_INPUT` naming the field and
 * write nothing; a full disk rejects with `ERR_QUOTA` and writes nothing.
 */
export interface OrionMemory {
  /** Stores a memory; resolves once it is committed (it survives a crash of the page). */
  add(text: string, options?: MemoryAddOptions): Promise<MemoryRecord>;
  /**
   * Stores many, 500 per transaction, with `memory_progress` events. Every item is checked before
   * anything is written; if a later chunk fails, the earlier chunks stay (the error says how many).
   */
  addMany(items: Array<{ text: string } & MemoryAddOptions>): Promise<MemoryRecord[]>;
  /** The memory, or null (also for an expired tool_result). */
  get(id: string): Promise<MemoryRecord | null>;
  /** Resolves to whether there was such a memory. */
  delete(id: string): Promise<boolean>;
  /** A page in creation order. */
  list(options?: MemoryListOptions): Promise<MemoryPage>;
  /** The most similar memories, best first; their `lastAccessed` becomes now. */
  search(query: string, options?: MemorySearchOptions): Promise<MemorySearchHit[]>;
  /** Deletes all memories, or those of one kind, in one transaction; resolves to how many. */
  purge(options?: { kind?: MemoryKind }): Promise<number>;
  stats(): Promise<MemoryStats>;
}

export interface MemoryProgressEvent {
  kind: 'memory_progress';
  done: number;
  total: number;
}

/** A backup's file is being read (or taken) for `backups.export` / `backups.download`. */
export interface BackupProgressEvent {
  kind: 'backup_progress';
  operation: 'export';
  /** Memories so far. */
  done: number;
  /** Memories in the backup. */
  total: number;
}

/**
 * The re-embedding migration wrote another batch: memories embedded by another embedder version
 * (a profile change, a model upgrade, a restored or imported backup) get a vector of the active
 * one, on the job engine (queue `orion.reembed`), a batch per transaction; a reload resumes it.
 * Until then they are stored but not searchable (`memory.stats().otherVersions`).
 */
export interface EmbeddingMigrationEvent {
  kind: 'embedding_migration';
  /** Memories re-embedded by this run so far. */
  migrated: number;
  /** Memories of another version still to do. */
  remaining: number;
  done: boolean;
}

export interface MemoryIndexEvent {
  kind: 'memory_index';
  loaded: number;
  done: boolean;
}

export interface OrionOptions {
  /** The IndexedDB database for memories (default 'orion'). */
  database?: string;
  /** Memory retention and limits over the profile's (full 100 000 memories, lite 20 000, micro 5 000). */
  memory?: {
    /** Memories kept before the least recently used are evicted (1 to 10 000 000). */
    maxMemories?: number;
    /** How long tool_result memories live, in ms (default 24 h). */
    toolResultTtlMs?: number;
    /** Longest memory text in UTF-8 bytes (default 64 KiB, at most 1 MiB). */
    maxTextBytes?: number;
  };
  /** How background tasks run. */
  tasks?: {
    /**
     * Ms a running job or workflow is held before another tab's worker may take it back when its
     * worker died (500 to 3 600 000; default 30 000).
     */
    leaseMs?: number;
  };
  /** 'auto' (default) detects the profile from the device. */
  profile?: ProfileName | 'auto';
  /** Where the model files are; without an embedding URL the hashing embedder (micro) is used. */
  models?: ModelUrls;
  /** Model download, memory index loading and addMany progress. */
  onProgress?: (event: ModelProgressEvent | MemoryProgressEvent | MemoryIndexEvent | BackupProgressEvent | EmbeddingMigrationEvent) => void;
  /** Allow debug-only requests (`orion.debug.crash()`). Off by default. */
  debug?: boolean;
  /** Where the worker script is, if a bundler moved it (default: `./worker.js` beside this module). */
  workerUrl?: string | URL;
  /**
   * How long a started worker may take to load its wasm, in ms (30000). A worker that has not
   * loaded by then is replaced once during `Orion.create` (in Chromium a module worker has been
   * seen to hang while loading); if the second one hangs too, `create` rejects with
   * ERR_WORKER_START. Model downloads do not count: they come after.
   */
  startTimeoutMs?: number;
  /** Circuit breaker thresholds. */
  breaker?: BreakerConfig;
  /** Health thresholds. */
  health?: HealthConfig;
  /**
   * The page's own LLM. When given, every generation calls it (through the client) instead of
   * the local model, which is then never loaded, even if `models.llm` names one. Return the
   * whole text, or an async iterable of pieces to stream them. Throw to fail the attempt (an
   * error with `retryable: false` is not retried). `signal` aborts when the worker stops waiting
   * (the attempt timed out, or the caller cancelled).
   */
  llm?: (request: HostLlmRequest) => string | Promise<string> | AsyncIterable<string> | Promise<AsyncIterable<string>>;
  /** How text is generated. */
  llmOptions?: LlmOptions;
  /**
   * The page's own tools for `ask`, beside the built-in calculator, date and time, unit
   * conversion and memory tools. A tool is chosen when the question is similar enough to its
   * description or examples; its arguments are read from the question by its schema (numbers fill
   * number properties in order, an enum takes the value named, the one free-text string property
   * takes the question) and checked against `parameters` before `run` is called. Each call has a
   * time limit, a retry, and a circuit `tool:<name>`; a throw with `retryable: false` is not retried.
   */
  tools?: HostToolDefinition[];
  /** How `ask` answers; the worker checks the ranges (ERR_INVALID_INPUT on `ask.<field>`). */
  ask?: AskSettings;
  /**
   * When automatic backups are taken and how many are kept; the worker checks the ranges
   * (ERR_INVALID_INPUT on `backups.<field>`).
   */
  backups?: BackupSettings;
}

/** `Orion.create({ backups })`: every field optional. */
export interface BackupSettings {
  /**
   * Take automatic backups (default true). `false` removes their schedule; automatic backups
   * already taken stay until deleted.
   */
  automatic?: boolean;
  /** Ms from the database's first start to the first automatic backup, 0 to 7 days (default 300 000: 5 minutes). */
  firstAfterMs?: number;
  /**
   * Ms between automatic backups, 1 minute to 30 days (default 3 600 000: hourly). A changed
   * interval takes effect from the last automatic backup.
   */
  everyMs?: number;
  /** Automatic backups kept, the newest, 1 to 100 (default 5). Manual ones are kept until deleted. */
  keepAuto?: number;
}

/** `Orion.create({ llmOptions })`. */
export interface LlmOptions {
  /**
   * The local model's weights in memory: 'q8_0' (default) re-quantizes at load time: in wasm
   * it decodes about 6 times faster and reads prompts about twice as fast (an integer SIMD
   * kernel), at about twice the memory of a Q4_1 file; 'as-stored' keeps the file's format.
   */
  weights?: 'q8_0' | 'as-stored';
  /** The longest prompt + answer the local model serves, in tokens (16 to 8192; default 2048). */
  maxContext?: number;
  /** The `llm` function's time limit per attempt, in ms (default 60 000, at most 600 000). */
  timeoutMs?: number;
  /** Attempts per generation of the `llm` function (1 to 5, default 2). Timeouts are not retried. */
  attempts?: number;
  /** The wait before the `llm` function's first retry, doubling after (default 500 ms). */
  backoffMs?: number;
}

/** One earlier turn of a conversation. */
export interface ChatTurn {
  role: 'user' | 'assistant';
  content: string;
}

/** How to generate (orion_core::generation::GenerateRequest); bad fields reject ERR_INVALID_INPUT naming them. */
export interface GenerateFields {
  /** The system prompt; the model's default when absent. */
  system?: string;
  /** Earlier turns, oldest first. */
  history?: ChatTurn[];
  /** Turns of one conversation share the local model's cache: a follow-up reads only its new tokens. */
  conversationId?: string;
  /** Which agent asks (passed to the `llm` function). */
  agent?: string;
  /** 0 (default) is greedy; up to 2. */
  temperature?: number;
  /** Nucleus sampling, in (0, 1]. */
  topP?: number;
  /** Keep only the k likeliest tokens (at least 1). */
  topK?: number;
  /** 1 (default, off) to 2. */
  repetitionPenalty?: number;
  /** The same seed, request and model give the same text (default 0). */
  seed?: number;
  /** Most tokens to generate (1 to 4096, default 256). */
  maxTokens?: number;
  /** Generation ends before the first of these strings (at most 8, each 1 to 64 bytes). */
  stop?: string[];
}

/** A whole generation request. */
export interface GenerateRequest extends GenerateFields {
  /** The user's message (not empty, at most 64 KiB). */
  prompt: string;
}

/** What the `llm` function gets: the request, the attempt (1 first) and the abort signal. */
export interface HostLlmRequest extends Required<Pick<GenerateRequest, 'prompt' | 'temperature' | 'maxTokens' | 'stop' | 'history'>> {
  system: string | null;
  agent: string | null;
  conversationId: string | null;
  topP: number | null;
  topK: number | null;
  repetitionPenalty: number;
  seed: number;
  attempt: number;
  signal: AbortSignal;
}

export interface GenerateOptions extends GenerateFields {
  /**
   * Cancels the generation. Aborted before it starts: rejects with ERR_CANCELLED. Aborted while it
   * runs: the generator stops at its next token and the call RESOLVES with `finish: 'cancelled'`
   * and the text so far.
   */
  signal?: AbortSignal;
  /** Each new piece of text as it is generated (the pieces concatenate to the final text). */
  onToken?: (text: string) => void;
}

export interface GenerateManyOptions {
  /** Cancels every generation of the batch (see `GenerateOptions.signal`). */
  signal?: AbortSignal;
  /** Each new piece of text of request `index`. */
  onToken?: (index: number, text: string) => void;
}

/** Why a generation ended. */
export type FinishReason = 'endOfTurn' | 'stop' | 'length' | 'cancelled';

/** A finished generation. */
export interface Generated {
  /** The text, without the stop string or end-of-turn token. */
  text: string;
  finish: FinishReason;
  /** Tokens in the prompt (0 for the `llm` function). */
  promptTokens: number;
  /** Prompt tokens read from the conversation's cache. */
  cachedTokens: number;
  /** Tokens generated (pieces, for the `llm` function). */
  tokens: number;
  /** Time reading the prompt, ms. */
  prefillMs: number;
  /** Time generating, ms. */
  decodeMs: number;
}

/** A stage of answering, as `onStatus` and `ask_status` events name it. */
export type AskStage =
  | 'tool_search'
  | 'memory_search'
  | 'llm_reasoning'
  | 'multi_agent_parallel'
  | 'multi_agent_critical'
  | 'multi_agent_synthesis';

/** `Orion.create({ ask })`: budgets and thresholds of `orion.ask` (defaults in brackets). */
export interface AskSettings {
  /** Memories retrieved per question, 1 to 20 [5]. */
  memoryK?: number;
  /** The least cosine similarity of a retrieved memory, -1 to 1 [0.3]. */
  memoryMinSimilarity?: number;
  /** On `lite`, questions of at least this many words get the debate [12]. */
  liteDebateMinWords?: number;
  /** Tokens of one generation [128]. */
  maxTokens?: number;
  /** Tokens of each debate agent [64]. */
  agentMaxTokens?: number;
  /** Ms each debate stage may take before its agents are cut short [30000]. */
  agentTimeoutMs?: number;
  /** Keep each model-written exchange as a `conversation` memory [true]. */
  rememberExchanges?: boolean;
}

/** A tool the page brings (`Orion.create({ tools })`). */
export interface HostToolDefinition {
  /** 1 to 64 letters, digits, `_`, `-` or `.`; unique, and not a built-in tool's name. */
  name: string;
  /** What it does, in a sentence (compared with questions). */
  description: string;
  /** Questions it answers (compared with questions); at most 16. */
  examples?: string[];
  /** JSON Schema of its arguments (`type: 'object'`). */
  parameters: Record<string, unknown>;
  /** Runs it; the result (any cloneable value) becomes the answer (a string, or `{text}`, is shown as is). */
  run(args: Record<string, unknown>, context: { signal: AbortSignal }): unknown | Promise<unknown>;
}

/** Options of `orion.ask`. */
export interface AskOptions {
  /** Questions of one conversation share history (the last turns, older ones summarised). */
  conversationId?: string;
  /** IANA time zone for date and time answers; the page's own by default. */
  timeZone?: string;
  /** Aborting rejects the question with ERR_CANCELLED and stops generation at the next token. */
  signal?: AbortSignal;
  /** Each stage as it starts. */
  onStatus?: (status: { stage: AskStage; message: string }) => void;
  /** Generated text as it streams, with the agent writing it. */
  onToken?: (text: string, agent: 'single' | 'logical' | 'creative' | 'critical' | 'synthesizer') => void;
}

/** A memory an answer used. */
export interface MemoryHitRef {
  id: string;
  text: string;
  similarity: number;
}

/** One measured quality signal, 0 to 1. */
export interface QualitySignal {
  name: 'agreement' | 'coverage' | 'support' | 'length' | 'repetition' | 'exact';
  value: number;
  weight: number;
}

/** One step of answering. */
export interface ReasoningStep {
  stage: AskStage | 'format';
  detail: string;
  durationMs: number;
  ok: boolean;
}

/** What `orion.ask` resolves with. */
export interface AskResponse {
  response: string;
  /** 0 to 1: 1 for an exact tool result, the quality score for generated answers. */
  confidence: number;
  provenance: {
    /** Agents whose text went into the answer (`single` for one generation). */
    fromAgents: string[];
    memoryHits: MemoryHitRef[];
    toolUsed: string | null;
    /** Components routed around (`generator`, `embedder`, `store`, a tool's name). */
    degraded: string[];
  };
  debug: {
    inferenceTimeMs: number;
    /** The computed quality; `low` when the score is below 0.6. */
    quality: { score: number; low: boolean; signals: QualitySignal[] };
    traceId: string;
    profile: ProfileName;
    route: 'tool' | 'debate' | 'single' | 'memory' | 'fallback';
    notes: string[];
  };
  reasoningSteps: ReasoningStep[];
}

/**
 * Text generation. The generator is the `llm` function when given, else the local model of
 * `models.llm`, loaded on the first call. If it cannot load (404, a truncated or malformed file,
 * a wrong SHA-256, not enough memory) calls reject with ERR_MODEL_LOAD, `health()` shows the
 * `generator` component unhealthy (reason `unavailable`, `lastError` says why) and everything else
 * keeps working; the load is tried again by the first call after `breaker.openTimeoutMs` (30 s).
 * Every call runs under the circuit `llm_inference` (ERR_CIRCUIT_OPEN after 5 failures in a row).
 * Other rejections: ERR_GENERATION (the model or the `llm` function failed), ERR_TIMEOUT (the `llm`
 * function did not finish in `llmOptions.timeoutMs`), ERR_INVALID_INPUT (a bad field, named).
 */
export interface OrionLlm {
  generate(prompt: string | GenerateRequest, options?: GenerateOptions): Promise<Generated>;
  /** Several generations together (the local model decodes them as one batch); rejects with the first failure. */
  generateMany(requests: (string | GenerateRequest)[], options?: GenerateManyOptions): Promise<Generated[]>;
}

export interface LlmTokenEvent {
  kind: 'llm_token';
  requestId: number;
  index: number;
  text: string;
}

/** The worker runs one of the page's tools (the client answers it). */
export interface ToolHostCallEvent {
  kind: 'tool_host_call';
  callId: string;
  tool: string;
  arguments: Record<string, unknown>;
}

/** The worker stopped waiting for a tool call; its `signal` is aborted. */
export interface ToolHostAbortEvent {
  kind: 'tool_host_abort';
  callId: string;
}

/** An `ask` entered a stage. */
export interface AskStatusEvent {
  kind: 'ask_status';
  requestId: number;
  stage: AskStage;
  message: string;
}

/** A piece of an `ask`'s generated text. */
export interface AskTokenEvent {
  kind: 'ask_token';
  requestId: number;
  agent: 'single' | 'logical' | 'creative' | 'critical' | 'synthesizer';
  text: string;
}

export interface LlmHostCallEvent {
  kind: 'llm_host_call';
  callId: string;
  request: Omit<HostLlmRequest, 'attempt' | 'signal'>;
  attempt: number;
}

export interface LlmHostAbortEvent {
  kind: 'llm_host_abort';
  callId: string;
}

export interface VersionInfo {
  /** orion-core's version. */
  core: string;
  /** orion-web's version. */
  web: string;
  /** The protocol version the worker speaks. */
  protocol: number;
}

export interface Pong<T = unknown> {
  /** The payload, unchanged. */
  payload: T;
  /** When the worker handled the ping (ms since the Unix epoch). */
  atMs: number;
}

export type HealthStatus = 'healthy' | 'degraded' | 'unhealthy';

export type HealthReason =
  | { kind: 'ok' }
  | { kind: 'consecutive_failures'; count: number }
  | { kind: 'error_rate'; rate: number }
  | { kind: 'heartbeat_timeout'; silentMs: number }
  /** Out of service until started again (a model that could not load); `lastError` says why. */
  | { kind: 'unavailable' };

export interface ComponentHealth {
  name: string;
  status: HealthStatus;
  reason: HealthReason;
  consecutiveFailures: number;
  /** Failures / results over the rolling window, 0 to 1. */
  errorRate: number;
  windowSamples: number;
  pending: number;
  lastError: string | null;
  lastSuccessMs: number | null;
  lastFailureMs: number | null;
  totalCalls: number;
  totalFailures: number;
}

export interface HealthReport {
  /** The worst status of any component. */
  status: HealthStatus;
  atMs: number;
  components: ComponentHealth[];
  /**
   * Whether this worker leads its database: of the workers of all tabs open on one database, the
   * one holding its Web Lock (`orion-leader/<database>`) runs schedules and workflows. When it
   * ends, another worker takes over and gets a `leadership` event.
   */
  leader: boolean;
  /** Task alerts firing now (see `tasks.monitoring.configureAlerts`). */
  alerts: Omit<AlertEvent, 'kind'>[];
  /** The origin's storage, read in the page. */
  storage: StorageHealth;
}

/** `health().storage`: null where the browser does not say. */
export interface StorageHealth {
  /** What `navigator.storage.persist()`, asked at `Orion.create`, answered. */
  persistGranted: boolean | null;
  /** `navigator.storage.persisted()` now: whether the browser keeps this origin's data under storage pressure. */
  persisted: boolean | null;
  /** `navigator.storage.estimate().usage`, bytes. */
  usageBytes: number | null;
  /** `navigator.storage.estimate().quota`, bytes. */
  quotaBytes: number | null;
}

export type BreakerState = 'CLOSED' | 'OPEN' | 'HALF_OPEN';

export interface BreakerTransitionEvent {
  kind: 'breaker_transition';
  key: string;
  from: BreakerState;
  to: BreakerState;
  reason: 'failure_threshold' | 'timeout_elapsed' | 'probe_failed' | 'probes_succeeded';
  atMs: number;
}

/** This worker became the leader of its database (see `HealthReport.leader`). */
export interface LeadershipEvent {
  kind: 'leadership';
  database: string;
}

export interface HealthTransitionEvent {
  kind: 'health_transition';
  component: string;
  from: HealthStatus;
  to: HealthStatus;
  reason: HealthReason;
  atMs: number;
}

/** JSON a task payload, result or progress may be. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Job priority: 1 critical, 5 high, 10 normal (default), 15 low, 20 background; lower runs first. */
export type Priority = number;

/** Waits between attempts: ms (fixed), or a policy. Exponential is `delay * 2^(attempt-1)`. */
export type Backoff = number | { type: 'fixed' | 'exponential'; delay: number; jitter?: number; cap?: number };

/** Options of `tasks.simple.schedule` (BullMQ's, where they exist there). */
export interface JobOptions {
  priority?: Priority;
  /** Ms before the job may start. */
  delay?: number;
  /** Runs in all (default 1). */
  attempts?: number;
  backoff?: Backoff;
  /** Ms one attempt may run; then its signal aborts and the attempt fails (retryably). */
  timeout?: number;
  /** A job with this id already present is returned instead of adding another. */
  jobId?: string;
  /** A newer job with the same debounce id replaces the pending one within `ttl` ms. */
  debounce?: { id: string; ttl: number };
  /** Delete on completion: `true`, or keep the newest N. */
  removeOnComplete?: boolean | number;
  /** Delete on final failure: `true`, or keep the newest N (failed jobs are the dead-letter set). */
  removeOnFail?: boolean | number;
}

/** Options of `tasks.complex.schedule`. */
export interface WorkflowOptions {
  /** The workflow type to run (default: the task's name). */
  workflowType?: string;
  /** A workflow with this id already present is returned instead of starting another. */
  workflowId?: string;
  /** Retry policy of every step that sets none. */
  retry?: { attempts?: number; backoff?: Backoff };
  /** Ms from the start after which the workflow times out and compensates. */
  timeout?: number;
  /** Ms one step attempt may run. */
  stepTimeout?: number;
}

/** What a job handler gets besides its payload. */
export interface JobContext {
  taskId: string;
  name: string;
  /** 1 for the first attempt. */
  attempt: number;
  /** The same for every attempt: key side effects on it (delivery is at least once). */
  idempotencyKey: string;
  /** Aborts when the job is cancelled, times out, or the worker stops waiting. */
  signal: AbortSignal;
  /** Records progress: 0 to 100, or any JSON. */
  progress(value: Json): Promise<null>;
}

/** What a workflow step (or compensation) gets besides the workflow's input. */
export interface StepContext {
  taskId: string;
  name: string;
  step: string;
  attempt: number;
  idempotencyKey: string;
  signal: AbortSignal;
  /** Results of the steps completed before this one, by step name. */
  results: Record<string, Json>;
  /** Steps: the last checkpointed cursor (null at first). */
  cursor?: Json;
  /** Steps: saves a cursor, so that a resumed run continues from it. */
  checkpoint?(cursor: Json): Promise<null>;
  /** Compensations: what the step being undone returned. */
  stepResult?: Json;
}

/** A handler's error: `retryable: false` fails the job (or step) without further attempts. */
export type TaskError = Error & { retryable?: boolean };

export interface WorkflowStep {
  name: string;
  run(input: Json, context: StepContext): Json | void | Promise<Json | void>;
  /** Undoes the step when a later one fails for good, the workflow is cancelled or times out. */
  compensate?(input: Json, context: StepContext): unknown;
  retry?: { attempts?: number; backoff?: Backoff };
  timeout?: number;
}

export type TaskSource = 'queue' | 'workflow';

/** One status shape for jobs and workflows. */
export interface TaskStatus {
  id: string;
  source: TaskSource;
  /** The queue or workflow type. */
  name: string;
  /**
   * Jobs: waiting, delayed, paused, active, completed, failed, cancelled. Workflows: running,
   * paused, compensating, completed, failed, compensated, cancelled, timedOut.
   */
  state: string;
  /** A job's progress; a workflow's percentage of steps completed. */
  progress: Json;
  attempts: number;
  error: string | null;
  result: Json;
  /** Workflows: the step running or next. */
  step: string | null;
  createdAt: number;
  finishedAt: number | null;
}

export interface TaskFilter {
  source?: TaskSource;
  state?: string;
  /** Queue tasks only. */
  name?: string;
  limit?: number;
  after?: string;
}

export interface StateCounts {
  waiting: number;
  delayed: number;
  paused: number;
  active: number;
  completed: number;
  failed: number;
  cancelled: number;
}

export interface TaskCounts {
  jobs: { all: StateCounts; queues: Record<string, StateCounts>; paused: string[] };
  /** Page handler calls in flight. */
  hostRuns: number;
  /** Whether this tab's worker drives the tasks. */
  leader: boolean;
}

/** When a schedule fires: every N ms or a cron pattern in a time zone. */
export interface ScheduleSpec {
  every?: number;
  cron?: string;
  /** IANA time zone of `cron` (default UTC). */
  tz?: string;
  startDate?: number;
  endDate?: number;
  /** Fire at most this many times. */
  limit?: number;
  /** Fire once at creation. */
  immediately?: boolean;
  /** Occurrences missed while no tab ran: skip them, fire once, or fire each. */
  catchUp?: 'skip' | 'once' | 'all';
}

export interface ScheduleRecord {
  id: string;
  spec: ScheduleSpec;
  template: { name: string; data: Json; options: JobOptions };
  nextRunAt: number | null;
  lastRunAt: number | null;
  count: number;
  createdAt: number;
  updatedAt: number;
}

/** A stored backup. */
export interface BackupInfo {
  id: string;
  /**
   * Automatic (by default the newest 5 kept, first 5 min after the database's first start, then
   * hourly: see `BackupSettings`) or manual (kept until deleted).
   */
  kind: 'auto' | 'manual';
  label: string | null;
  createdAt: number;
  itemCount: number;
  /** Size of its file, in bytes. */
  bytes: number;
  /** The embedder active when it was taken. */
  embeddingVersion: string;
  /** `sha256:` and the hex SHA-256 of its rows. */
  checksum: string;
  parts: number;
}

/** `orion.backups.stats()`. */
export interface BackupStats {
  /** Backups stored, automatic and manual. */
  count: number;
  auto: number;
  manual: number;
  /** Their files' bytes, together. */
  bytes: number;
  /** When the newest and the oldest were taken (ms), `null` when there is none. */
  newestAt: number | null;
  oldestAt: number | null;
  /** Automatic backups kept (`Orion.create({ backups: { keepAuto } })`). */
  keepAuto: number;
}

/** Backups of the memories, kept in IndexedDB. */
export interface OrionBackups {
  /** Takes a backup of every memory as they are at one moment. */
  create(options?: { label?: string }): Promise<BackupInfo>;
  /** Every stored backup, newest first. */
  list(): Promise<BackupInfo[]>;
  /** Counts and sizes of the stored backups. */
  stats(): Promise<BackupStats>;
  /** Checks a stored backup as an import would. */
  verify(id: string): Promise<{ valid: boolean; issues: string[] }>;
  /**
   * The backup's file: JSON that dexie-export-import's `importDB` accepts, with ORION's header.
   * Without an id, the file of a backup of every memory taken now (one read transaction, read in
   * chunks while searches go on), which is not stored. The worker sends the file part by part
   * as it reads it (`backup_progress` events); they are joined here. For a large database prefer
   * `download`, which never makes one string of it.
   */
  export(id?: string): Promise<string>;
  /**
   * Saves the backup's file (without an id, one taken now, as `export()`) from the page as
   * `orion-backup-<date>.json`; resolves to the file name.
   */
  download(id?: string): Promise<string>;
  /** Deletes a stored backup; resolves to whether there was one. */
  delete(id: string): Promise<boolean>;
  /**
   * Restores a stored backup's memories, checked whole first (`ERR_BACKUP_INVALID` if it is
   * damaged or disagrees with what was recorded), then written in one transaction: never
   * half-applied; on any error the database is unchanged. Refused with `ERR_INVALID_INPUT`
   * (`memories`) when the result would exceed the profile's `maxMemories`. Emits `memory_index`
   * events as the index takes the memories in; other tabs are told.
   */
  restore(id: string, options?: RestoreOptions): Promise<RestoreReport>;
  /**
   * Imports a backup file (ORION's, or a Dexie `exportDB` of ORION's database: no checksum then,
   * every row still checked). Everything is validated before anything is written; any problem is
   * `ERR_BACKUP_INVALID` with the path of the first bad field (e.g.
   * `data.data[0].rows[17].embedding`) and the database unchanged. A File or Blob is read as
   * bytes and moved to the worker (no copy of the file as a string); it must be UTF-8 (the
   * encoding `export` and `download` write), or it is `ERR_BACKUP_INVALID`.
   */
  import(source: string | Blob, options?: RestoreOptions): Promise<RestoreReport>;
}

/** How a restore or import treats the memories already stored. */
export interface RestoreOptions {
  /** Delete every stored memory first, in the same transaction (default false). */
  clearExisting?: boolean;
  /** For ids already stored (when not clearing): keep the stored memory (`skip`, default) or replace it (`overwrite`). */
  onConflict?: 'skip' | 'overwrite';
}

/** What a restore or import did. */
export interface RestoreReport {
  /** Memories written (new and replaced). */
  restored: number;
  /** Memories of the backup not written: already stored (`skip`) or expired tool results. */
  skipped: number;
  /** Of those restored, how many replaced a stored memory with the same id. */
  replaced: number;
  /** Of those restored, how many carry another embedding version (stored, not searchable until re-embedded). */
  otherVersions: number;
}

/** Background work that survives reloads, crashes and several tabs (one tab runs it). */
export interface OrionTasks {
  /** Queue jobs: one handler call per attempt. */
  readonly simple: {
    /** Defines queue task `name`; `handler` runs in this page (in the leader tab). */
    define(name: string, handler: (payload: Json, context: JobContext) => unknown, options?: { schema?: object; concurrency?: number }): Promise<null>;
    /** Enqueues a job; the payload is checked against the task's schema first. */
    schedule(name: string, payload?: Json, options?: JobOptions): Promise<TaskStatus>;
  };
  /** Checkpointed workflows: steps run once each, compensations on failure (saga). */
  readonly complex: {
    define(name: string, definition: { steps: WorkflowStep[]; schema?: object }): Promise<null>;
    schedule(name: string, payload?: Json, options?: WorkflowOptions): Promise<TaskStatus>;
    /** Sends a signal to a running workflow. */
    signal(id: string, name: string, payload?: Json): Promise<null>;
  };
  /** The task's status, or null. */
  status(id: string): Promise<TaskStatus | null>;
  cancel(id: string): Promise<TaskStatus | null>;
  pause(id: string): Promise<TaskStatus | null>;
  resume(id: string): Promise<TaskStatus | null>;
  /** Runs a failed job again. */
  retry(id: string): Promise<TaskStatus>;
  list(filter?: TaskFilter): Promise<{ items: TaskStatus[]; next: string | null }>;
  counts(): Promise<TaskCounts>;
  pauseQueue(name: string): Promise<null>;
  resumeQueue(name: string): Promise<null>;
  readonly monitoring: {
    /**
     * Completed/failed counts per queue and minute (24 h kept), wait and run percentiles, workflow
     * and schedule-lateness figures over `windowMs` (default 24 h). They cover what this tab's
     * worker ran or changed: the leader tab's figures are the whole picture.
     */
    getMetrics(options?: { windowMs?: number }): Promise<TaskMetricsReport>;
    /** Replaces the alert rules; alerts arrive as `alert` events and show in `health().alerts`. */
    configureAlerts(rules: AlertRules): Promise<AlertRules>;
  };
  readonly schedules: {
    /** Creates or replaces a schedule enqueueing `template` (a queue task). */
    upsert(id: string, spec: ScheduleSpec, template: { name: string; data?: Json; options?: JobOptions }): Promise<ScheduleRecord>;
    remove(id: string): Promise<boolean>;
    list(): Promise<ScheduleRecord[]>;
  };
}

export interface Percentiles {
  count: number;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
}

export interface JobStats {
  completed: number;
  /** Failed attempts, retried or not. */
  failed: number;
  /** Jobs that failed for good. */
  finalFailed: number;
  cancelled: number;
  throughputPerMin: number;
  /** failed / (completed + failed); null without attempts. */
  failureRate: number | null;
  /** Ready → started, ms. */
  wait: Percentiles;
  /** Started → outcome, ms. */
  run: Percentiles;
}

export interface TaskMetricsReport {
  at: number;
  windowMs: number;
  from: number;
  totals: JobStats;
  queues: Array<JobStats & { queue: string; backlog: number | null; backlogAt: number | null; perMinute: Array<{ minute: number; completed: number; failed: number }> }>;
  workflowTotals: { completed: number; failed: number; cancelled: number; throughputPerMin: number; failureRate: number | null; run: Percentiles };
  workflows: Array<{ workflowType: string; completed: number; failed: number; cancelled: number; run: Percentiles }>;
  schedules: { fires: number; lateness: Percentiles; schedulers: Array<{ schedulerId: string; fires: number; lastDueAt: number | null; lastFiredAt: number | null; lastLatenessMs: number | null }> };
}

/** Alert rules; each is optional. Windows are ms (1 s to 24 h). */
export interface AlertRules {
  /** Per queue: failed attempts / attempts over `window` above `threshold` (0 to 1). */
  taskFailureRate?: { threshold: number; window: number; minSamples?: number };
  /** Per queue: more than `threshold` jobs waiting for all of `window`. */
  queueBacklog?: { threshold: number; window: number };
  /** Per schedule: a fire more than `seconds` after its due time. */
  scheduleLate?: { seconds: number };
}

export interface AlertEvent {
  kind: 'alert';
  rule: 'taskFailureRate' | 'queueBacklog' | 'scheduleLate';
  /** The queue or schedule id. */
  subject: string;
  state: 'firing' | 'resolved';
  value: number;
  threshold: number;
  at: number;
  message: string;
}

/** Run page task code (handled by the client; listeners see it too). */
export interface TaskRunEvent {
  kind: 'task_run';
  runId: string;
  name: string;
  role: 'job' | 'step' | 'compensation';
  taskId: string;
  step: string | null;
  payload: Json;
  attempt: number;
  idempotencyKey: string;
}

/** The worker stopped waiting for a run; the client aborts its signal. */
export interface TaskAbortEvent {
  kind: 'task_abort';
  runId: string;
}

export type OrionEvent =
  | BreakerTransitionEvent
  | HealthTransitionEvent
  | ModelProgressEvent
  | EmbedderFallbackEvent
  | MemoryProgressEvent
  | BackupProgressEvent
  | EmbeddingMigrationEvent
  | MemoryIndexEvent
  | LeadershipEvent
  | TaskRunEvent
  | TaskAbortEvent
  | LlmTokenEvent
  | AskStatusEvent
  | AskTokenEvent
  | ToolHostCallEvent
  | ToolHostAbortEvent
  | LlmHostCallEvent
  | LlmHostAbortEvent
  | AlertEvent;

export type WorkerLifecycle =
  | { state: 'starting'; restart: boolean }
  | { state: 'ready'; version: VersionInfo }
  | { state: 'crashed'; code: ErrorCode; reason: string }
  | { state: 'closed' };

export interface OrionEventMap {
  event: OrionEvent;
  breaker_transition: BreakerTransitionEvent;
  health_transition: HealthTransitionEvent;
  model_progress: ModelProgressEvent;
  embedder_fallback: EmbedderFallbackEvent;
  memory_progress: MemoryProgressEvent;
  backup_progress: BackupProgressEvent;
  embedding_migration: EmbeddingMigrationEvent;
  memory_index: MemoryIndexEvent;
  leadership: LeadershipEvent;
  task_run: TaskRunEvent;
  task_abort: TaskAbortEvent;
  llm_token: LlmTokenEvent;
  ask_status: AskStatusEvent;
  ask_token: AskTokenEvent;
  tool_host_call: ToolHostCallEvent;
  tool_host_abort: ToolHostAbortEvent;
  llm_host_call: LlmHostCallEvent;
  llm_host_abort: LlmHostAbortEvent;
  alert: AlertEvent;
  worker: WorkerLifecycle;
}

export declare class Orion {
  private constructor();
  /** Starts the worker and resolves once it is ready; rejects with ERR_WORKER_START if it cannot. */
  static create(options?: OrionOptions): Promise<Orion>;
  /** Round-trips a JSON-like payload through the worker. */
  ping<T = null>(payload?: T): Promise<Pong<T>>;
  /** The WorkerHealthMonitor report. */
  health(): Promise<HealthReport>;
  /** Worker crate and protocol versions, plus this client's version. */
  version(): Promise<VersionInfo & { client: string }>;
  /** Sentence embeddings, one unit-length Float32Array per text, computed in the worker. */
  embed(texts: string[], options?: EmbedOptions): Promise<Float32Array[]>;
  /** The device profile, the device facts and the embedder in use. */
  profile(): Promise<ProfileInfo>;
  /**
   * Answers a question locally: a tool when one fits (calculator, dates, units, memory), else
   * the memories and the language model (the multi-agent debate on `full`, and on `lite` for long
   * questions; one generation otherwise). Without a language model (the `micro` profile, or the
   * generator unavailable) it answers from memory and says so in `provenance.degraded`.
   * Rejects with ERR_INVALID_INPUT (empty or over-long query, bad time zone), ERR_CIRCUIT_OPEN
   * (`query_processing` open), ERR_CANCELLED (the signal aborted).
   */
  ask(query: string, options?: AskOptions): Promise<AskResponse>;
  /** What ORION remembers. */
  readonly memory: OrionMemory;
  /** Background work: jobs, workflows, schedules. */
  readonly tasks: OrionTasks;
  /** Backups of the memories. */
  readonly backups: OrionBackups;
  /** Text generation: the `llm` function, or the local model. */
  readonly llm: OrionLlm;
  /** Model files cached for offline use. */
  readonly models: {
    /** Deletes the cached model files; resolves to whether there was a cache to delete. */
    clearCache(): Promise<boolean>;
  };
  /** Subscribes to events; returns an unsubscribe function. */
  on<K extends keyof OrionEventMap>(name: K, listener: (event: OrionEventMap[K]) => void): () => void;
  /** Terminates the worker; pending and later calls reject with ERR_CLOSED. */
  close(): Promise<void>;
  /** Debug-only requests (need `debug: true`). */
  readonly debug: {
    /** Makes the worker panic. Rejects with ERR_WORKER_CRASHED; the next call starts a fresh worker. */
    crash(): Promise<never>;
  };
}
