// The connection to the server: the chunkcast protocol over a WebSocket (one binary message
// per frame), the handshake, keepalive on the Rust defaults, and request ids matched to their
// answers.

import { CAPS, ERROR, VERSION, decodeFrame, encodeFrame, errorName } from './wire.js';

// protocol/core/src/session/keepalive.rs, `DEFAULT_PING_INTERVAL`: pings go out this often.
export const DEFAULT_PING_INTERVAL_MS = 5000;
// protocol/core/src/session/keepalive.rs, `DEFAULT_IDLE_TIMEOUT`: a server silent this long
// (pings unanswered) is gone, and the page says so instead of waiting forever.
export const DEFAULT_IDLE_TIMEOUT_MS = 30000;

const CLIENT_NAME = 'chunkcast-web/1';

const clockStart = performance.now();
// Our clock for `time_us` fields: microseconds since the page loaded.
const nowUs = () => BigInt(Math.floor((performance.now() - clockStart) * 1000));

// An error the server sent in answer to a request.
export class RequestError extends Error {
  constructor(code, message) {
    super(errorName(code) + ': ' + message);
    this.code = code;
  }
}

// One connection. `handlers`: onReady(welcome), onLogin(message) (a token is needed),
// onFail(message), onClosed(), onChunk(frame), onClose(frame) (a stream ends),
// onGoodbye(frame), onRtt(ms), onChat(frame).
export class Connection {
  constructor(token, handlers) {
    this.h = handlers;
    this.nextRequest = 1;
    this.nextStream = 1;
    this.pending = new Map(); // request id -> {resolve, reject, entries}
    this.pingNonce = 0n;
    this.lastRx = performance.now();
    this.timer = null;
    this.welcomed = false;
    this.failed = false;
    this.buf = null;
    this.serverOffsetUs = null; // the server's clock minus ours, from the last ping
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    this.ws = new WebSocket(url);
    this.ws.binaryType = 'arraybuffer';
    this.ws.onopen = () => this.send({ type: 'HELLO', min_version: VERSION, max_version: VERSION,
      caps: CAPS.CHAT, token, client_name: CLIENT_NAME });
    this.ws.onmessage = (ev) => this.receive(new Uint8Array(ev.data));
    this.ws.onclose = () => {
      clearInterval(this.timer);
      for (const p of this.pending.values()) p.reject(new Error('connection closed'));
      this.pending.clear();
      this.h.onClosed();
    };
  }

  send(frame) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(encodeFrame(frame));
  }

  close() { this.ws.close(); }

  fail(message) {
    this.failed = true;
    this.h.onFail(message);
    this.ws.close();
  }

  // The server sends one frame per message; frames are still reassembled by their length
  // prefix, so that a server that splits or batches them is understood too.
  receive(data) {
    this.lastRx = performance.now();
    if (this.buf && this.buf.length) {
      const joined = new Uint8Array(this.buf.length + data.length);
      joined.set(this.buf);
      joined.set(data, this.buf.length);
      this.buf = joined;
    } else {
      this.buf = data;
    }
    while (!this.failed && this.buf.length >= 4) {
      const len = new DataView(this.buf.buffer, this.buf.byteOffset).getUint32(0);
      if (this.buf.length < 4 + len) break;
      const bytes = this.buf.subarray(0, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      let f;
      try { f = decodeFrame(bytes); } catch (e) { this.fail('bad frame from server: ' + e.message); return; }
      this.take(f);
    }
  }

  take(f) {
    if (!this.welcomed) {
      if (f.type === 'WELCOME') { this.welcomed = true; this.onWelcome(f); return; }
      if (f.type === 'ERROR' && f.code === ERROR.UNAUTHORIZED) {
        this.failed = true;
        this.h.onLogin(f.message);
        this.ws.close();
        return;
      }
      this.fail(f.type === 'ERROR' ? f.message : 'unexpected first frame');
      return;
    }
    this.onFrame(f);
  }

  onWelcome(f) {
    this.timer = setInterval(() => this.keepalive(), DEFAULT_PING_INTERVAL_MS);
    // A first ping now: chat stamps lines on the server's clock, which its answer gives.
    this.keepalive();
    this.h.onReady(f);
  }

  keepalive() {
    if (performance.now() - this.lastRx > DEFAULT_IDLE_TIMEOUT_MS) {
      this.fail('the server stopped answering');
      return;
    }
    this.pingNonce += 1n;
    this.send({ type: 'PING', nonce: this.pingNonce, time_us: nowUs() });
  }

  onFrame(f) {
    switch (f.type) {
      case 'PING':
        this.send({ type: 'PONG', nonce: f.nonce, echo_us: f.time_us, time_us: nowUs() });
        break;
      case 'PONG':
        // Only the ping awaiting its answer gives a true round trip.
        if (f.nonce === this.pingNonce) {
          const now = nowUs();
          this.h.onRtt(Number(now - f.echo_us) / 1000);
          // The server answered at about the middle of the round trip.
          this.serverOffsetUs = f.time_us - (f.echo_us + now) / 2n;
        }
        break;
      case 'CATALOG': {
        const p = this.pending.get(f.request);
        if (!p) break;
        p.entries.push(...f.entries);
        if (f.last) { this.pending.delete(f.request); p.resolve(p.entries); }
        break;
      }
      case 'OPENED': {
        const p = this.pending.get(f.request);
        if (p) { this.pending.delete(f.request); p.resolve(f); }
        break;
      }
      case 'ERROR': {
        const p = this.pending.get(f.request);
        if (p) { this.pending.delete(f.request); p.reject(new RequestError(f.code, f.message)); }
        break;
      }
      case 'CHUNK': this.h.onChunk(f); break;
      case 'CLOSE': this.h.onClose(f); break;
      case 'GOODBYE': this.h.onGoodbye(f); break;
      case 'CHAT': if (this.h.onChat) this.h.onChat(f); break;
    }
  }

  // Sends the frame `build(id)` makes for a fresh request id; resolves with the answer.
  request(build) {
    const id = this.nextRequest++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, entries: [] });
      this.send(build(id));
    });
  }

  // Now on the server's clock (µs), once a ping has told the offset; else null.
  serverNowUs() { return this.serverOffsetUs === null ? null : nowUs() + this.serverOffsetUs; }

  // The entries under `prefix` (all parts of the listing).
  list(prefix) { return this.request((request) => ({ type: 'LIST', request, prefix })); }

  // A fresh stream id.
  stream() { return this.nextStream++; }

  // Opens a file on `stream`, realtime, from chunk `seq`; resolves with OPENED. `fragment`
  // asks for a progressive MP4 as fragmented MP4 (others come as they are).
  open(stream, path, seq, fragment = false) {
    return this.request((request) => ({ type: 'OPEN', request, stream, path, mode: 'realtime',
      resume: seq > 0 ? { seq } : 'start', compress: false, raw: false, fragment,
      chunk_size: 0 }));
  }

  // Receives a live channel on `stream`; resolves with OPENED.
  subscribe(stream, channel) {
    return this.request((request) => ({ type: 'SUBSCRIBE', request, stream, channel }));
  }

  // Cancels a stream.
  cancel(stream) { this.send({ type: 'CLOSE', stream, code: ERROR.NONE, message: '' }); }
}
