// chunkcast web viewer: the chunkcast protocol (docs/PROTOCOL.md) over a WebSocket, one
// binary message per frame, and playback of WAV (Web Audio), MJPEG and Y4M (canvas) and
// images. No build step: plain JavaScript, served by `chunkcast-server --web ADDR`.
'use strict';

// ---------------------------------------------------------------------------------------
// Wire format

const T = { HELLO: 1, WELCOME: 2, ERROR: 3, PING: 4, PONG: 5, LIST: 6, CATALOG: 7, OPEN: 8,
  OPENED: 9, CHUNK: 10, CLOSE: 11, PUBLISH: 12, SUBSCRIBE: 13, GOODBYE: 14 };
const F = { KEY: 1, INIT: 2, END_OF_UNIT: 4, END_OF_STREAM: 8, COMPRESSED: 16 };
const U64_MAX = 0xffffffffffffffffn;
const FORMATS = ['mjpeg', 'y4m', 'mp4', 'png', 'jpeg', 'gif', 'bmp', 'webp', 'tiff'];
const ERRORS = ['none', 'bad request', 'unauthorized', 'not found', 'too large', 'busy',
  'internal error', 'unsupported version', 'protocol error', 'timeout', 'room full',
  'publisher lost', 'lagged', 'bad media', 'source changed'];

// CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, table-driven.
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

class Writer {
  constructor() { this.bytes = []; }
  u8(v) { this.bytes.push(v & 0xff); return this; }
  u16(v) { return this.u8(v >>> 8).u8(v); }
  u32(v) { return this.u16(v >>> 16).u16(v & 0xffff); }
  u64(v) {
    const b = BigInt(v);
    return this.u32(Number((b >> 32n) & 0xffffffffn)).u32(Number(b & 0xffffffffn));
  }
  str(s) {
    const b = new TextEncoder().encode(s);
    this.u16(b.length);
    for (const x of b) this.bytes.push(x);
    return this;
  }
  // The frame: u32 length (type byte + body), type, body.
  frame(type) {
    const out = new Uint8Array(5 + this.bytes.length);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, 1 + this.bytes.length);
    out[4] = type;
    out.set(this.bytes, 5);
    return out;
  }
}

class Reader {
  constructor(bytes) {
    this.b = bytes;
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.p = 0;
  }
  need(n) { if (this.p + n > this.b.length) throw new Error('truncated frame'); }
  u8() { this.need(1); return this.b[this.p++]; }
  u16() { this.need(2); const v = this.dv.getUint16(this.p); this.p += 2; return v; }
  u32() { this.need(4); const v = this.dv.getUint32(this.p); this.p += 4; return v; }
  u64() { this.need(8); const v = this.dv.getBigUint64(this.p); this.p += 8; return v; }
  optU64() { const v = this.u64(); return v === U64_MAX ? null : Number(v); }
  bytes(n) { this.need(n); const v = this.b.subarray(this.p, this.p + n); this.p += n; return v; }
  str() { return new TextDecoder().decode(this.bytes(this.u16())); }
  codec() {
    const kind = this.u8();
    switch (kind) {
      case 0: return { kind: 'bytes' };
      case 1: return { kind: 'audio', sampleRate: this.u32(), channels: this.u16(),
        bits: this.u16(), float: this.u8() === 1 };
      case 2: return { kind: 'video', format: FORMATS[this.u8()], width: this.u32(),
        height: this.u32(), fpsNum: this.u32(), fpsDen: this.u32() };
      case 3: return { kind: 'image', format: FORMATS[this.u8()], width: this.u32(),
        height: this.u32(), color: this.u8() };
      default: throw new Error('unknown media kind ' + kind);
    }
  }
}

function errorName(code) { return ERRORS[code] || 'unknown error ' + code; }

// Parses one frame (length prefix included) into an object.
function parseFrame(bytes) {
  const r = new Reader(bytes);
  const len = r.u32();
  if (len + 4 !== bytes.length) throw new Error('bad frame length');
  const type = r.u8();
  switch (type) {
    case T.WELCOME: return { type, version: r.u16(), caps: r.u32(), session: r.u64(), name: r.str() };
    case T.ERROR: return { type, request: r.u32(), code: r.u16(), message: r.str() };
    case T.PING: return { type, nonce: r.u64(), timeUs: r.u64() };
    case T.PONG: return { type, nonce: r.u64(), echoUs: r.u64(), timeUs: r.u64() };
    case T.CATALOG: {
      const f = { type, request: r.u32(), last: r.u8() === 1, entries: [] };
      for (let n = r.u16(); n > 0; n--) {
        f.entries.push({ path: r.str(), codec: r.codec(), size: r.optU64(),
          durationUs: r.optU64(), viewers: r.u32() });
      }
      return f;
    }
    case T.OPENED: {
      const f = { type, request: r.u32(), stream: r.u32(), codec: r.codec(),
        totalLen: r.optU64(), chunkCount: r.optU64(), durationUs: r.optU64() };
      const digest = r.u8();
      if (digest === 1) r.bytes(32);
      f.startSeq = Number(r.u64()); f.startOffset = Number(r.u64()); f.chunkSize = r.u32();
      return f;
    }
    case T.CHUNK: {
      const header = bytes.subarray(5, 5 + 37);
      const f = { type, stream: r.u32(), seq: Number(r.u64()), offset: Number(r.u64()),
        ptsUs: Number(r.u64()), durationUs: r.u32(), flags: r.u8(), rawLen: r.u32(), crc: r.u32() };
      f.payload = bytes.subarray(5 + 41);
      // Over the 37 header bytes before `crc`, then the payload, as one message.
      f.crcOk = crcOver(header, f.payload) === f.crc;
      return f;
    }
    case T.CLOSE: return { type, stream: r.u32(), code: r.u16(), message: r.str() };
    case T.GOODBYE: return { type, code: r.u16(), message: r.str() };
    default: return { type };
  }
}

// CRC32C of `a` followed by `b`, as one contiguous message (check value of "123456789":
// 0xE3069283).
function crcOver(a, b) {
  let c = 0xffffffff;
  for (let i = 0; i < a.length; i++) c = CRC_TABLE[(c ^ a[i]) & 0xff] ^ (c >>> 8);
  for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

// ---------------------------------------------------------------------------------------
// Counters the page exposes (tests read them; a person reads the stats box).

const stats = window.chunkcast = {
  state: 'connecting', path: null, kind: null, unitsPlayed: 0, unitsReceived: 0, drops: 0,
  gaps: 0, crcFailures: 0, chunks: 0, bytes: 0, lastPtsUs: null, rttMs: null, jitterMs: 0,
  bufferMs: 0, bitrateKbps: 0, error: null, ended: false, paused: false, volume: 1,
  liveLists: 0, live: [],
};

const $ = (id) => document.getElementById(id);

function setState(state, text) {
  stats.state = state;
  const el = $('status');
  el.dataset.state = state;
  el.textContent = text || state;
}

// ---------------------------------------------------------------------------------------
// Connection

let ws = null;
let nextRequest = 1;
let nextStream = 1;
const pending = new Map(); // request id -> {resolve, reject, entries}
let player = null;
let pingNonce = 0n;
let pingTimer = null;
const clockStart = performance.now();
const nowUs = () => BigInt(Math.floor((performance.now() - clockStart) * 1000));

function send(bytes) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(bytes); }

function connect(token) {
  setState('connecting', 'connecting…');
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  let welcomed = false;
  let buf = new Uint8Array(0);
  ws.onopen = () => {
    // HELLO: magic, versions 1..1, caps 0 (no lz4 here), token, name.
    const w = new Writer();
    for (const c of 'CKCS') w.u8(c.charCodeAt(0));
    send(w.u16(1).u16(1).u32(0).str(token).str('chunkcast-web/1').frame(T.HELLO));
  };
  ws.onmessage = (ev) => {
    // One message is one frame; still, reassemble by length prefix to be safe.
    const data = new Uint8Array(ev.data);
    if (buf.length) {
      const joined = new Uint8Array(buf.length + data.length);
      joined.set(buf); joined.set(data, buf.length); buf = joined;
    } else {
      buf = data;
    }
    while (buf.length >= 4) {
      const len = new DataView(buf.buffer, buf.byteOffset).getUint32(0);
      if (buf.length < 4 + len) break;
      const frame = buf.subarray(0, 4 + len);
      buf = buf.subarray(4 + len);
      let f;
      try { f = parseFrame(frame); } catch (e) { fail('bad frame from server: ' + e.message); ws.close(); return; }
      if (!welcomed) {
        if (f.type === T.WELCOME) { welcomed = true; onWelcome(f); continue; }
        if (f.type === T.ERROR && f.code === 2) { askToken(f.message); ws.close(); return; }
        fail(f.type === T.ERROR ? f.message : 'unexpected first frame');
        ws.close();
        return;
      }
      onFrame(f);
    }
  };
  ws.onclose = () => {
    clearInterval(pingTimer);
    clearInterval(liveTimer);
    if (stats.state !== 'error' && stats.state !== 'login') fail('connection closed');
    if (player) player.stop(false);
  };
}

function fail(message) {
  stats.error = message;
  setState('error', message);
}

function askToken(message) {
  setState('login', message);
  $('login').hidden = false;
  $('token').focus();
}

function onWelcome(f) {
  $('login').hidden = true;
  setState('ready', 'connected to ' + (f.name || 'server'));
  pingTimer = setInterval(() => {
    pingNonce += 1n;
    send(new Writer().u64(pingNonce).u64(nowUs()).frame(T.PING));
  }, 2000);
  clearInterval(liveTimer);
  liveTimer = setInterval(refreshLive, LIVE_POLL_MS);
  refresh().then(openFragment);
}

// The viewer counts change while the page is open: the live list is asked for again this
// often (a LIST of `live/` costs the server a lock and a few bytes).
const LIVE_POLL_MS = 3000;
let liveTimer = null;

async function refreshLive() {
  try {
    const live = await list('live/');
    fill($('live'), live);
    stats.live = live.map((e) => ({ path: e.path, viewers: e.viewers }));
    stats.liveLists++;
  } catch (e) {
    // A refused poll (over the request rate, say) is not worth an error: the next one retries.
  }
}

// `#/PATH` in the page's URL: a link to a file or channel, opened once the page is connected.
function fragmentPath() {
  const h = location.hash;
  return h.startsWith('#/') && h.length > 2 ? decodeURIComponent(h.slice(2)) : null;
}

function openFragment() {
  const path = fragmentPath();
  if (path && (!player || player.path !== path)) play(path);
}

function onFrame(f) {
  switch (f.type) {
    case T.PING:
      send(new Writer().u64(f.nonce).u64(f.timeUs).u64(nowUs()).frame(T.PONG));
      break;
    case T.PONG:
      if (f.nonce === pingNonce) stats.rttMs = Number(nowUs() - f.echoUs) / 1000;
      break;
    case T.CATALOG: {
      const p = pending.get(f.request);
      if (!p) break;
      p.entries.push(...f.entries);
      if (f.last) { pending.delete(f.request); p.resolve(p.entries); }
      break;
    }
    case T.OPENED: {
      const p = pending.get(f.request);
      if (p) { pending.delete(f.request); p.resolve(f); }
      break;
    }
    case T.ERROR: {
      const p = pending.get(f.request);
      if (p) { pending.delete(f.request); p.reject(new Error(errorName(f.code) + ': ' + f.message)); }
      break;
    }
    case T.CHUNK:
      if (player && player.stream === f.stream) player.chunk(f);
      break;
    case T.CLOSE:
      if (player && player.stream === f.stream) {
        player.finish(f.code ? errorName(f.code) + (f.message ? ': ' + f.message : '') : null);
      }
      break;
    case T.GOODBYE:
      fail('server closed the connection: ' + errorName(f.code) + (f.message ? ': ' + f.message : ''));
      break;
  }
}

function request(build) {
  const id = nextRequest++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, entries: [] });
    send(build(id));
  });
}

const list = (prefix) => request((id) => new Writer().u32(id).str(prefix).frame(T.LIST));

// ---------------------------------------------------------------------------------------
// Catalog

function describe(e) {
  const c = e.codec;
  const parts = [];
  if (c.kind === 'audio') parts.push(`${c.sampleRate} Hz ${c.channels}ch ${c.bits}-bit${c.float ? ' float' : ''}`);
  else if (c.kind === 'video' || c.kind === 'image') parts.push(`${c.format} ${c.width}×${c.height}`);
  else parts.push('bytes');
  if (e.durationUs !== null && e.durationUs > 0) parts.push((e.durationUs / 1e6).toFixed(1) + ' s');
  if (e.path.startsWith('live/')) parts.push(e.viewers + ' watching');
  return parts.join(', ');
}

function playable(c) {
  if (c.kind === 'audio') return [8, 16, 24, 32].includes(c.bits);
  if (c.kind === 'video') return c.format === 'mjpeg' || c.format === 'y4m';
  if (c.kind === 'image') return ['png', 'jpeg', 'gif', 'bmp', 'webp'].includes(c.format);
  return false;
}

function fill(ul, entries) {
  ul.replaceChildren();
  for (const e of entries) {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.path = e.path;
    b.textContent = e.path + ' ';
    const small = document.createElement('small');
    small.textContent = describe(e);
    b.append(small);
    b.disabled = !playable(e.codec);
    if (b.disabled) b.title = 'not playable in the browser (use the chunkcast client)';
    b.onclick = () => play(e.path);
    li.append(b);
    ul.append(li);
  }
  if (!entries.length) ul.textContent = '(none)';
}

async function refresh() {
  try {
    const [files, live] = await Promise.all([list(''), list('live/')]);
    fill($('catalog'), files.filter((e) => !e.path.startsWith('live/')));
    fill($('live'), live);
    stats.catalog = files.map((e) => e.path);
    stats.live = live.map((e) => ({ path: e.path, viewers: e.viewers }));
  } catch (e) {
    fail(e.message);
  }
}

// ---------------------------------------------------------------------------------------
// Playback

const BUFFER_MS = 150;

function resetCounters(path) {
  Object.assign(stats, { path, unitsPlayed: 0, unitsReceived: 0, drops: 0, gaps: 0,
    crcFailures: 0, chunks: 0, bytes: 0, firstPtsUs: null, lastPtsUs: null, jitterMs: 0, bufferMs: 0,
    bitrateKbps: 0, ended: false, error: null });
}

// Opens `path` and plays it; `fromUs` starts a file at that media time (seek, or resume after
// a pause) by asking for the chunk that carries it.
async function play(path, fromUs = 0, estimate = null) {
  if (player) player.stop(true);
  resetCounters(path);
  const link = '#/' + encodeURI(path);
  if (location.hash !== link) history.replaceState(null, '', link);
  const stream = nextStream++;
  const live = path.startsWith('live/');
  // Route chunks to a placeholder until OPENED tells what they are.
  const early = [];
  player = { stream, chunk: (c) => early.push(c), finish: () => {}, stop: () => {} };
  const mine = player;
  setState('opening', 'opening ' + path);
  let opened;
  try {
    opened = await request((id) => {
      const w = new Writer().u32(id).u32(stream);
      if (live) return w.str(path).frame(T.SUBSCRIBE);
      // flags: realtime; from the start, or from the chunk that carries `fromUs` (a constant
      // rate is assumed: chunks cut at the same size as the first open, chosen by the server);
      // chunk size chosen by the server.
      const seq = estimate && fromUs > 0
        ? Math.min(estimate.chunks - 1, Math.floor((fromUs / estimate.durationUs) * estimate.chunks))
        : 0;
      return w.u8(1).u8(seq > 0 ? 1 : 0).u64(seq).u32(0).str(path).frame(T.OPEN);
    });
  } catch (e) {
    if (player === mine) { player = null; fail(e.message); }
    return;
  }
  if (player !== mine) return;
  const c = opened.codec;
  stats.kind = c.kind === 'bytes' ? 'bytes' : c.kind + (c.format ? '/' + c.format : '');
  player = new Player(stream, c, opened, path, estimate);
  for (const ch of early) player.chunk(ch);
  setState('playing', 'playing ' + path);
  stats.paused = false;
  showControls(player);
}

// The player box, its controls and the stats appear once something plays.
function showControls(p) {
  $('hint').hidden = true;
  $('player').hidden = false;
  $('stop').disabled = false;
  const seekable = p.seekable();
  $('pause').hidden = !seekable;
  $('pause').disabled = false;
  $('pause').textContent = 'Pause';
  $('seek').hidden = !seekable;
  if (seekable) {
    $('seek').max = String(p.durationUs / 1e6);
    $('seek').value = '0';
  }
  $('volume-label').hidden = p.codec.kind !== 'audio';
}

function pause() {
  if (!player) return;
  if (stats.paused) {
    // Resume where it stopped: a new open from the last unit played.
    const p = player;
    play(p.path, stats.lastPtsUs || 0, p.estimate());
    return;
  }
  const at = stats.lastPtsUs;
  const p = player;
  p.stop(true);
  stats.paused = true;
  stats.lastPtsUs = at;
  setState('paused', 'paused ' + p.path);
  $('pause').textContent = 'Play';
  $('pause').disabled = false;
  $('stop').disabled = false;
}

function seek(seconds) {
  if (!player || !player.seekable()) return;
  play(player.path, Math.round(seconds * 1e6), player.estimate());
}

class Player {
  constructor(stream, codec, opened, path, estimate) {
    this.stream = stream;
    this.codec = codec;
    this.path = path;
    // Whole-file figures from the first open (a resumed open's may count from where it began).
    this.durationUs = estimate ? estimate.durationUs : opened.durationUs;
    this.chunkCount = estimate ? estimate.chunks : opened.chunkCount;
    this.nextSeq = opened.startSeq;
    this.parts = [];        // payloads of the unit being assembled
    this.partsKey = true;
    this.initBytes = [];    // INIT chunks (image: everything)
    this.pending = 0;       // units scheduled and not yet played
    this.done = false;      // END_OF_STREAM or CLOSE seen
    this.stopped = false;
    this.base = null;       // {ptsUs, at}: the playout clock's origin
    this.lastArrival = null;
    this.rateBytes = 0;
    this.rateSince = performance.now();
    this.lastDrawnPts = -1;
    this.timers = new Set();
    const canvas = $('video'), img = $('image');
    canvas.hidden = codec.kind !== 'video';
    img.hidden = true;
    // The black box is for pictures only; audio shows just its controls and stats.
    $('stage').hidden = codec.kind !== 'video' && codec.kind !== 'image';
    if (codec.kind === 'video') {
      canvas.width = codec.width; canvas.height = codec.height;
      this.ctx2d = canvas.getContext('2d');
    }
    if (codec.kind === 'audio') {
      this.audio = new AudioContext({ sampleRate: codec.sampleRate, latencyHint: 'interactive' });
      this.gain = this.audio.createGain();
      this.gain.gain.value = stats.volume;
      this.gain.connect(this.audio.destination);
      this.audio.resume();
    }
    $('now').textContent = path + ' — ' + describe({ path, codec, durationUs: opened.durationUs, viewers: 0 });
    this.statsTimer = setInterval(() => this.showStats(), 250);
  }

  chunk(c) {
    if (this.stopped) return;
    stats.chunks++;
    stats.bytes += c.payload.length;
    this.rateBytes += c.payload.length;
    if (!c.crcOk) { stats.crcFailures++; this.breakUnit(); return; }
    if (c.flags & F.COMPRESSED) { stats.drops++; this.breakUnit(); return; }
    if (c.seq < this.nextSeq) return; // duplicate or stale
    if (c.seq > this.nextSeq) { stats.gaps += c.seq - this.nextSeq; this.breakUnit(); }
    this.nextSeq = c.seq + 1;
    if (c.flags & F.INIT && this.codec.kind !== 'image') {
      this.initBytes.push(c.payload.slice());
    } else {
      this.parts.push(c.payload.slice());
      if (c.flags & F.END_OF_UNIT && this.codec.kind !== 'image') {
        const unit = concat(this.parts);
        this.parts = [];
        if (this.partsKey) this.unit(unit, c.ptsUs, c.durationUs);
        this.partsKey = true;
      }
    }
    if (c.flags & F.END_OF_STREAM) {
      if (this.codec.kind === 'image') this.showImage(concat(this.parts));
      this.finish(null);
    }
  }

  // A lost chunk: the unit being assembled is incomplete and cannot be shown.
  breakUnit() {
    if (this.parts.length) stats.drops++;
    this.parts = [];
    this.partsKey = false;
  }

  // The playout clock: the first unit plays BUFFER_MS after it arrives; every later unit at
  // its timestamp's distance from the first. Returns the due time in ms (performance.now()).
  due(ptsUs) {
    const now = performance.now();
    if (this.base === null) this.base = { ptsUs, at: now + BUFFER_MS };
    const due = this.base.at + (ptsUs - this.base.ptsUs) / 1000;
    // Jitter (RFC 3550 style): variation of (arrival - timestamp) between units.
    const transit = now - ptsUs / 1000;
    if (this.lastArrival !== null) {
      stats.jitterMs += (Math.abs(transit - this.lastArrival) - stats.jitterMs) / 16;
    }
    this.lastArrival = transit;
    return due;
  }

  unit(bytes, ptsUs, durationUs) {
    stats.unitsReceived++;
    if (stats.firstPtsUs === null) stats.firstPtsUs = ptsUs;
    if (this.codec.kind === 'audio') this.playAudio(bytes, ptsUs);
    else if (this.codec.format === 'mjpeg') this.playJpeg(bytes, ptsUs, durationUs);
    else if (this.codec.format === 'y4m') this.playY4m(bytes, ptsUs, durationUs);
  }

  playAudio(bytes, ptsUs) {
    const a = this.audio, c = this.codec;
    if (this.audioBase === undefined) this.audioBase = { ptsUs, at: a.currentTime + BUFFER_MS / 1000 };
    this.due(ptsUs);
    const when = this.audioBase.at + (ptsUs - this.audioBase.ptsUs) / 1e6;
    if (when < a.currentTime) { stats.drops++; return; } // too late: its slot has passed
    const pcm = decodePcm(bytes, c);
    const frames = pcm[0].length;
    if (!frames) { stats.unitsPlayed++; return; }
    const buffer = a.createBuffer(c.channels, frames, c.sampleRate);
    for (let ch = 0; ch < c.channels; ch++) buffer.copyToChannel(pcm[ch], ch);
    const src = a.createBufferSource();
    src.buffer = buffer;
    src.connect(this.gain);
    src.start(when);
    this.pending++;
    stats.lastPtsUs = ptsUs;
    src.onended = () => {
      if (this.stopped) return;
      stats.unitsPlayed++;
      this.pending--;
      this.maybeEnded();
    };
  }

  // Schedules `draw` at the unit's due time; a unit that is already a frame late is dropped.
  schedule(ptsUs, durationUs, prepare, draw) {
    const due = this.due(ptsUs);
    this.pending++;
    Promise.resolve(prepare()).then((frame) => {
      if (this.stopped) return;
      const late = performance.now() - due;
      if (late > Math.max(durationUs / 1000, 40)) { this.pending--; stats.drops++; this.maybeEnded(); return; }
      const t = setTimeout(() => {
        this.timers.delete(t);
        this.pending--;
        if (this.stopped) return;
        if (ptsUs < this.lastDrawnPts) { stats.drops++; } else {
          draw(frame);
          this.lastDrawnPts = ptsUs;
          stats.lastPtsUs = ptsUs;
          stats.unitsPlayed++;
        }
        this.maybeEnded();
      }, Math.max(0, due - performance.now()));
      this.timers.add(t);
    }, () => { this.pending--; stats.drops++; this.maybeEnded(); });
  }

  playJpeg(bytes, ptsUs, durationUs) {
    this.schedule(ptsUs, durationUs,
      () => createImageBitmap(new Blob([bytes], { type: 'image/jpeg' })),
      (bitmap) => { this.ctx2d.drawImage(bitmap, 0, 0); bitmap.close(); });
  }

  playY4m(bytes, ptsUs, durationUs) {
    this.schedule(ptsUs, durationUs, () => yuv420ToImage(bytes, this.codec.width, this.codec.height),
      (image) => this.ctx2d.putImageData(image, 0, 0));
  }

  showImage(bytes) {
    const img = $('image');
    const type = 'image/' + this.codec.format;
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = URL.createObjectURL(new Blob([bytes], { type }));
    img.src = this.url;
    img.hidden = false;
    stats.unitsReceived = 1;
    stats.unitsPlayed = 1;
  }

  // Files with a duration can be paused and sought (by reopening at a chunk); live cannot.
  seekable() {
    return !this.path.startsWith('live/') && this.codec.kind !== 'image'
      && this.durationUs > 0 && this.chunkCount > 0;
  }

  estimate() {
    return { durationUs: this.durationUs, chunks: this.chunkCount };
  }

  setVolume(v) {
    if (this.gain) this.gain.gain.value = v;
  }

  finish(error) {
    if (this.done) return;
    this.done = true;
    if (error) { stats.error = error; setState('error', this.path + ': ' + error); }
    this.maybeEnded();
  }

  maybeEnded() {
    if (!this.done || this.pending > 0 || this.stopped || stats.ended) return;
    stats.ended = true;
    this.showStats();
    clearInterval(this.statsTimer);
    if (stats.state !== 'error') setState('ended', 'finished ' + this.path);
    $('stop').disabled = true;
    $('pause').disabled = true;
  }

  stop(cancel) {
    if (this.stopped) return;
    if (cancel && !this.done) send(new Writer().u32(this.stream).u16(0).str('').frame(T.CLOSE));
    this.stopped = true;
    clearInterval(this.statsTimer);
    for (const t of this.timers) clearTimeout(t);
    if (this.audio) this.audio.close();
    $('stop').disabled = true;
    $('pause').disabled = true;
  }

  showStats() {
    const now = performance.now();
    const secs = (now - this.rateSince) / 1000;
    if (secs >= 1) {
      stats.bitrateKbps = Math.round((this.rateBytes * 8) / secs / 1000);
      this.rateBytes = 0;
      this.rateSince = now;
    }
    if (this.audio && this.audioBase !== undefined && stats.lastPtsUs !== null) {
      const end = this.audioBase.at + (stats.lastPtsUs - this.audioBase.ptsUs) / 1e6;
      stats.bufferMs = Math.max(0, Math.round((end - this.audio.currentTime) * 1000));
    } else if (this.base) {
      stats.bufferMs = this.pending * Math.round(1000 * (this.codec.fpsDen || 1) / (this.codec.fpsNum || 25));
    }
    const seek = $('seek');
    if (!seek.hidden && stats.lastPtsUs !== null && document.activeElement !== seek) {
      seek.value = String(stats.lastPtsUs / 1e6);
    }
    $('stats').textContent =
      `buffer ${stats.bufferMs} ms   units ${stats.unitsPlayed}/${stats.unitsReceived}   ` +
      `drops ${stats.drops}   gaps ${stats.gaps}   crc failures ${stats.crcFailures}\n` +
      `bitrate ${stats.bitrateKbps} kbit/s   rtt ${stats.rttMs === null ? '–' : stats.rttMs.toFixed(1) + ' ms'}   ` +
      `jitter ${stats.jitterMs.toFixed(1)} ms   position ${stats.lastPtsUs === null ? '–' : (stats.lastPtsUs / 1e6).toFixed(2) + ' s'}`;
  }
}

function concat(parts) {
  if (parts.length === 1) return parts[0];
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

// PCM (interleaved, little-endian as WAV stores it) to one Float32Array per channel.
function decodePcm(bytes, c) {
  const width = c.bits / 8;
  const frames = Math.floor(bytes.length / (width * c.channels));
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = [];
  for (let ch = 0; ch < c.channels; ch++) out.push(new Float32Array(frames));
  let p = 0;
  for (let i = 0; i < frames; i++) {
    for (let ch = 0; ch < c.channels; ch++, p += width) {
      let v;
      if (c.float) v = c.bits === 64 ? dv.getFloat64(p, true) : dv.getFloat32(p, true);
      else if (c.bits === 8) v = (bytes[p] - 128) / 128;
      else if (c.bits === 16) v = dv.getInt16(p, true) / 32768;
      else if (c.bits === 24) v = (((bytes[p] | (bytes[p + 1] << 8) | (bytes[p + 2] << 16)) << 8) >> 8) / 8388608;
      else v = dv.getInt32(p, true) / 2147483648;
      out[ch][i] = v;
    }
  }
  return out;
}

// One Y4M frame (4:2:0, full-range BT.601 as C420jpeg says) to RGBA.
function yuv420ToImage(bytes, w, h) {
  // The unit may still carry its `FRAME…\n` line.
  if (bytes.length > 5 && bytes[0] === 0x46 && bytes[1] === 0x52 && bytes[2] === 0x41) {
    bytes = bytes.subarray(bytes.indexOf(0x0a) + 1);
  }
  const cw = (w + 1) >> 1, chh = (h + 1) >> 1;
  if (bytes.length < w * h + 2 * cw * chh) throw new Error('short Y4M frame');
  const image = new ImageData(w, h);
  const d = image.data;
  const uo = w * h, vo = uo + cw * chh;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const Y = bytes[y * w + x];
      const ci = (y >> 1) * cw + (x >> 1);
      const U = bytes[uo + ci] - 128, V = bytes[vo + ci] - 128;
      const o = (y * w + x) * 4;
      d[o] = Y + 1.402 * V;
      d[o + 1] = Y - 0.344136 * U - 0.714136 * V;
      d[o + 2] = Y + 1.772 * U;
      d[o + 3] = 255;
    }
  }
  return image;
}

// ---------------------------------------------------------------------------------------
// Page

$('login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const token = $('token').value;
  $('token').value = '';
  connect(token);
});
$('refresh').onclick = () => refresh();
$('stop').onclick = () => {
  if (player) { player.stop(true); setState('ready', 'stopped'); }
  stats.paused = false;
  $('pause').disabled = true;
};
$('pause').onclick = pause;
$('seek').addEventListener('change', () => seek(Number($('seek').value)));
$('volume').addEventListener('input', () => {
  stats.volume = Number($('volume').value);
  if (player) player.setVolume(stats.volume);
});
window.addEventListener('hashchange', () => { if (stats.state !== 'connecting') openFragment(); });
window.chunkcastPlay = play;
window.chunkcastPause = pause;
window.chunkcastSeek = seek;
window.chunkcastGain = () => (player && player.gain ? player.gain.gain.value : null);
connect('');
