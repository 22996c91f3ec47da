// The page over the HTTP interface (`chunkcast-server --http`, docs/HTTP.md) instead of the
// WebSocket, so that a page served from anywhere (a CDN) plays from a chunkcast origin or the
// caches in front of it. Open the page with `?http=URL` (the origin's or the cache's base URL).
//
// - Live channels: index.json → init_url → chunk URLs from the last segment's first seq, in
//   order, one blocking request ahead (the server holds a request for a chunk not yet
//   published). The chunk frames are the native channel's, so they go to the same Player
//   (playout, video, audio, mse) as over the WebSocket.
// - MP4 files: the HLS route's CMAF init segment and segments (the server fragments the file),
//   handed to the Player as an INIT chunk and one unit per segment, through mse.js.
// - Images: the file index and its chunk URLs, in order, a few in flight; each CHUNK frame's
//   CRC32C is checked (wire.js) and a failure counted as over the WebSocket. The BLAKE3 proof
//   frames are skipped: the page has no BLAKE3, so it does not verify against the digest (the
//   chunkcast client does). The HLS segments carry no checksum at all.
// Other files (WAV, MJPEG and Y4M files) need the server's unit cutting, which only the
// WebSocket gives: the page says so.

import { FLAG, decodeFrame, errorName } from './wire.js';
import { Player } from './player.js';
import { msePlayable } from './mse.js';

// Chunk requests of a file in flight at once (in order).
export const FILE_AHEAD = 4;
// A failed request (network, 503 after the server's 10 s wait, 429) is made again after this
// long, doubling up to RETRY_MAX_MS; the page keeps trying while the viewer watches.
export const RETRY_MS = 250;
export const RETRY_MAX_MS = 4000;
// The most bytes one response may bring (a 4 MiB chunk and its proofs, an HLS segment):
// beyond it the page refuses rather than buffers.
export const MAX_BODY_BYTES = 64 << 20;
// A file's segments are fetched while less than this many seconds are buffered ahead of the
// <video>'s playhead (and few wait for the SourceBuffer), so that a long file is neither
// dropped by mse.js's bounded queue nor held whole in memory.
export const FILE_AHEAD_S = 20;

// An answer other than 2xx: the status and the JSON error body's code, name and message.
export class HttpError extends Error {
  constructor(status, body) {
    const name = body && body.error ? body.error : 'HTTP ' + status;
    super(name + (body && body.message ? ': ' + body.message : ''));
    this.status = status;
    this.code = body && typeof body.code === 'number' ? body.code : null;
    this.name_ = name;
  }
}

// The library path or channel name as URL path segments, each percent-encoded.
const encodePath = (p) => p.split('/').map(encodeURIComponent).join('/');

// The origin (or cache) at `base`, with `token` as a Bearer token when given.
export class HttpSource {
  constructor(base, token = '') {
    this.base = base.replace(/\/+$/, '');
    this.token = token;
  }

  url(path) { return new URL(path, this.base + '/').href; }

  // GET `path` (a server path or an absolute URL); the Response when 2xx, else HttpError.
  async get(path, signal) {
    const headers = this.token ? { Authorization: 'Bearer ' + this.token } : {};
    const r = await fetch(path.startsWith('http') ? path : this.url(path), { headers, signal });
    if (r.ok) return r;
    let body = null;
    try { body = await r.json(); } catch (e) { /* not JSON: the status says enough */ }
    throw new HttpError(r.status, body);
  }

  async bytes(path, signal) {
    const r = await this.get(path, signal);
    const len = Number(r.headers.get('content-length') || 0);
    if (len > MAX_BODY_BYTES) throw new Error(`an answer of ${len} bytes (at most ${MAX_BODY_BYTES})`);
    const b = new Uint8Array(await r.arrayBuffer());
    if (b.length > MAX_BODY_BYTES) throw new Error(`an answer of ${b.length} bytes (at most ${MAX_BODY_BYTES})`);
    return b;
  }

  // A body of native frames (docs/HTTP.md, "Frames in bodies"), decoded.
  async frames(path, signal) { return decodeFrames(await this.bytes(path, signal)); }

  json(path, signal) { return this.get(path, signal).then((r) => r.json()); }

  fileIndex(path, signal) { return this.json('/v1/index/' + encodePath(path), signal); }

  liveIndex(channel, signal) {
    return this.json('/v1/live/' + encodePath(channel.replace(/^live\//, '')) + '/index.json', signal);
  }
}

// Length-prefixed frames one after another; throws on a truncated or malformed one.
export function decodeFrames(bytes) {
  const out = [];
  let at = 0;
  while (at < bytes.length) {
    if (bytes.length - at < 4) throw new Error('truncated frame in a frames body');
    const len = new DataView(bytes.buffer, bytes.byteOffset + at, 4).getUint32(0);
    if (at + 4 + len > bytes.length) throw new Error('truncated frame in a frames body');
    out.push(decodeFrame(bytes.subarray(at, at + 4 + len)));
    at += 4 + len;
  }
  return out;
}

// The parts of an HLS playlist the page needs: the init segment's and the segments' URLs
// (absolute, from `base`) and durations (µs).
export function parsePlaylist(text, base) {
  let init = null;
  const segments = [];
  let duration = null;
  for (const line of text.split('\n').map((l) => l.trim())) {
    if (line.startsWith('#EXT-X-MAP:')) {
      const m = /URI="([^"]*)"/.exec(line);
      if (m) init = new URL(m[1], base).href;
    } else if (line.startsWith('#EXTINF:')) {
      duration = Math.round(parseFloat(line.slice(8)) * 1e6);
    } else if (line && !line.startsWith('#')) {
      segments.push({ url: new URL(line, base).href, durationUs: duration || 0 });
      duration = null;
    }
  }
  return { init, segments };
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

// A chunk object as wire.js decodes one, made up for a piece the HTTP route gives whole.
const madeChunk = (seq, ptsUs, durationUs, flags, payload) => ({ type: 'CHUNK', stream: 1,
  seq: BigInt(seq), offset: 0n, pts_us: BigInt(ptsUs), duration_us: durationUs, flags,
  raw_len: payload.length, payload, crc_ok: true });

// Plays `path` (a file, or `live/NAME`) from `source`. `hooks`: onPlayer(player) once the
// codec is known (the app shows its controls), onFail(message). Returns { stop() }.
export function playHttp(source, path, hooks) {
  const ctrl = new AbortController();
  const session = new HttpPlay(source, path, hooks, ctrl);
  session.run().catch((e) => {
    if (ctrl.signal.aborted) return;
    if (session.player) session.player.finish(e.message);
    else hooks.onFail(e.message, e);
  });
  return { path, stop: () => ctrl.abort(), get player() { return session.player; } };
}

class HttpPlay {
  constructor(source, path, hooks, ctrl) {
    this.source = source;
    this.path = path;
    this.hooks = hooks;
    this.ctrl = ctrl;
    this.signal = ctrl.signal;
    this.player = null;
  }

  done() { return this.signal.aborted || (this.player && (this.player.done || this.player.stopped)); }

  start(codec, opened) {
    // The Player's cancel stops the requests, as CLOSE stops a native stream.
    this.player = new Player(1, codec, opened, this.path, null, () => this.ctrl.abort());
    this.hooks.onPlayer(this.player);
  }

  run() {
    if (this.path.startsWith('live/')) return this.live();
    return this.file();
  }

  async file() {
    const index = await this.source.fileIndex(this.path, this.signal);
    const c = index.codec;
    const opened = { start_seq: 0, duration_us: index.duration_us, chunk_count: null };
    if (c.kind === 'video' && (c.format === 'mp4' || c.format === 'fmp4') && msePlayable()) {
      return this.hls(c, opened);
    }
    if (c.kind !== 'image') {
      throw new Error(`${c.kind}${c.format ? '/' + c.format : ''} files play over the WebSocket only (open the page without ?http=)`);
    }
    this.start(c, { ...opened, chunk_count: index.chunks });
    // In order, FILE_AHEAD in flight: each chunk's frames are its proofs then its CHUNK.
    const url = (seq) => index.chunk_url.replace('{seq}', String(seq));
    const inflight = [];
    let next = 0;
    let bad = 0;
    for (let seq = 0; seq < index.chunks && !this.done(); seq++) {
      while (next < index.chunks && inflight.length < FILE_AHEAD) {
        inflight.push(this.retrying(url(next)));
        next++;
      }
      const frames = await inflight.shift();
      for (const f of frames) {
        if (f.type !== 'CHUNK' || this.done()) continue;
        if (!f.crc_ok) bad++;
        this.player.chunk(f);
      }
    }
    // A last chunk that failed its check never said END_OF_STREAM: the file ends here, and
    // says why it is not whole (over the WebSocket the server's CLOSE would end it).
    if (!this.done()) this.player.finish(bad ? `${bad} chunk(s) failed their CRC32C check` : null);
  }

  // A progressive or fragmented MP4: the CMAF segments of its HLS playlist.
  async hls(codec, opened) {
    const listUrl = this.source.url('/v1/hls/' + encodePath(this.path) + '/index.m3u8');
    const text = await (await this.source.get(listUrl, this.signal)).text();
    const { init, segments } = parsePlaylist(text, listUrl);
    if (!init || !segments.length) throw new Error('the HLS playlist names no init segment or segments');
    this.start({ ...codec, format: 'fmp4' }, opened);
    const initBytes = await this.retryingBytes(init);
    if (this.done()) return;
    this.player.chunk(madeChunk(0, 0, 0, FLAG.INIT, initBytes));
    let pts = 0;
    let pending = segments.length ? this.retryingBytes(segments[0].url) : null;
    for (let i = 0; i < segments.length && !this.done(); i++) {
      const bytes = await pending;
      pending = i + 1 < segments.length ? this.retryingBytes(segments[i + 1].url) : null;
      await this.roomAhead();
      if (this.done()) return;
      let flags = FLAG.KEY | FLAG.END_OF_UNIT;
      if (i + 1 === segments.length) flags |= FLAG.END_OF_STREAM;
      this.player.chunk(madeChunk(i + 1, pts, segments[i].durationUs, flags, bytes));
      pts += segments[i].durationUs;
    }
  }

  async roomAhead() {
    const m = this.player.mse;
    while (m && !this.done()) {
      const v = m.video, b = v.buffered;
      const ahead = b.length ? b.end(b.length - 1) - v.currentTime : 0;
      if (m.queue.length < 4 && ahead < FILE_AHEAD_S) return;
      await sleep(250, this.signal);
    }
  }

  // A live channel: init, then chunks from the last segment's start, one request ahead.
  async live() {
    let index = await this.source.liveIndex(this.path, this.signal);
    this.start(index.codec, { start_seq: 0, duration_us: null, chunk_count: null });
    for (;;) {
      if (this.done()) return;
      // Start at a segment (a keyframe): next_seq may be in the middle of a unit. A ring the
      // server just started has none yet for a moment.
      const seg = index.segments[index.segments.length - 1];
      if (!seg) {
        if (index.ended) { this.player.finish(null); return; }
        await sleep(RETRY_MS, this.signal);
        index = await this.retryingIndex();
        continue;
      }
      let seq = seg.first_seq;
      if (!index.init_url.endsWith('/init/none')) {
        const init = await this.retrying(index.init_url);
        // The init chunks are numbered before the segment's start: no gap between them.
        this.player.resync(0);
        for (const f of init) if (f.type === 'CHUNK' && !this.done()) this.player.chunk(f);
      }
      this.player.resync(seq);
      const url = (s) => index.chunk_url.replace('{seq}', String(s));
      const ask = (s) => this.source.frames(url(s), this.signal).then((f) => ({ f }), (e) => ({ e }));
      let cur = ask(seq);
      let ahead = ask(seq + 1);
      let wait = RETRY_MS;
      let again = false;
      while (!this.done() && !again) {
        const r = await cur;
        if (this.done()) return;
        if (r.f) {
          for (const f of r.f) if (f.type === 'CHUNK') this.player.chunk(f);
          seq++;
          cur = ahead;
          ahead = ask(seq + 1);
          wait = RETRY_MS;
          continue;
        }
        const e = r.e;
        if (e instanceof HttpError && e.status === 410 && e.name_ === 'ended') {
          // The channel ended: cleanly (code 0) or with the publisher's error.
          this.player.finish(e.code ? errorName(e.code) + ': ' + e.message : null);
          return;
        }
        if (e instanceof HttpError && (e.status === 410 || e.status === 404)) {
          // A new run, an evicted seq, a seq too far ahead: start again from the index.
          again = true;
          break;
        }
        if (e instanceof HttpError && e.status !== 503 && e.status !== 429) throw e;
        // The server's wait ran out (503), over the rate, or the network blinked: ask again.
        await sleep(wait, this.signal);
        wait = Math.min(RETRY_MAX_MS, wait * 2);
        cur = ask(seq);
      }
      if (this.done()) return;
      index = await this.retryingIndex();
      if (index.ended) { this.player.finish(null); return; }
    }
  }

  async retryingIndex() {
    for (let wait = RETRY_MS; ; wait = Math.min(RETRY_MAX_MS, wait * 2)) {
      try { return await this.source.liveIndex(this.path, this.signal); } catch (e) {
        if (this.signal.aborted || (e instanceof HttpError && e.status !== 503 && e.status !== 429)) throw e;
      }
      await sleep(wait, this.signal);
    }
  }

  // A frames body, asked again on a 503/429 or a network failure.
  retrying(url) { return this.again(() => this.source.frames(url, this.signal)); }

  retryingBytes(url) { return this.again(() => this.source.bytes(url, this.signal)); }

  async again(fetchOnce) {
    for (let wait = RETRY_MS, tries = 0; ; wait = Math.min(RETRY_MAX_MS, wait * 2), tries++) {
      try { return await fetchOnce(); } catch (e) {
        const transient = !(e instanceof HttpError) || e.status === 503 || e.status === 429;
        if (this.signal.aborted || !transient || tries >= 8) throw e;
      }
      await sleep(wait, this.signal);
    }
  }
}
