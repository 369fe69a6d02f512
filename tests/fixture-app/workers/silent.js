// A worker script that loads and never says so: the client must give up on it (startTimeoutMs).
self.onmessage = () => {};
