// The chunkcast wire format (docs/PROTOCOL.md), the page's copy of protocol/core/src/wire:
// every frame's read and write side by side, one named constant per value. The browser test
// (server/tests/browser.rs) checks it against the golden vectors in docs/golden/frames.json,
// which the Rust codec is checked against too.
//
// A decoded frame is a plain object: `type` is the frame's name ('WELCOME'), the fields are
// named as in the Rust structs; u64 fields are BigInts (optional ones null when unknown),
// digests and payloads Uint8Arrays. `encodeFrame` takes the same shape (a u64 may also be a
// Number or a decimal string).

// The frame types: protocol/core/src/wire/frame.rs, `frame_types!`.
export const FRAME = Object.freeze({
  HELLO: 0x01, WELCOME: 0x02, ERROR: 0x03, PING: 0x04, PONG: 0x05, LIST: 0x06, CATALOG: 0x07,
  OPEN: 0x08, OPENED: 0x09, CHUNK: 0x0a, CLOSE: 0x0b, PUBLISH: 0x0c, SUBSCRIBE: 0x0d,
  GOODBYE: 0x0e, DIGEST: 0x0f, PROOF: 0x10, CHAT: 0x11,
  RELAY: 0x13,
});
const FRAME_NAMES = new Map(Object.entries(FRAME).map(([name, value]) => [value, name]));

// The error codes: protocol/core/src/error.rs, `error_codes!` (value → name).
export const ERROR_NAMES = Object.freeze(['none', 'bad request', 'unauthorized', 'not found',
  'too large', 'busy', 'internal error', 'unsupported version', 'protocol error', 'timeout',
  'room full', 'publisher lost', 'lagged', 'bad media', 'source changed',
  'verification failed', 'chat refused', 'bad input']);
export const ERROR = Object.freeze({ NONE: 0, BAD_REQUEST: 1, UNAUTHORIZED: 2, NOT_FOUND: 3,
  TOO_LARGE: 4, BUSY: 5, INTERNAL: 6, UNSUPPORTED_VERSION: 7, PROTOCOL: 8, TIMEOUT: 9,
  ROOM_FULL: 10, PUBLISHER_LOST: 11, LAGGED: 12, BAD_MEDIA: 13, CHANGED: 14,
  UNVERIFIED: 15, CHAT_REFUSED: 16, BAD_INPUT: 17 });

// An error code as the Rust `Display` writes it.
// Codes past the contiguous run above, by value (issue 18: the edge relays' code).
const ERROR_NAMES_BY_CODE = Object.freeze({ 18: 'relay refused' });
export function errorName(code) {
  if (code in ERROR_NAMES_BY_CODE) return ERROR_NAMES_BY_CODE[code];
  return code < ERROR_NAMES.length ? ERROR_NAMES[code] : 'unknown error ' + code;
}

// `Caps`: protocol/core/src/wire/frame.rs.
export const CAPS = Object.freeze({ LZ4: 0x1, DATAGRAMS: 0x2, DIGEST_AT_END: 0x4, ANY_FILE: 0x8,
  VERIFIED: 0x10, CHAT: 0x20, HEADER_CRC: 0x40, RELAY: 0x80 });
// `ChunkFlags`: protocol/core/src/wire/chunk.rs.
export const FLAG = Object.freeze({ KEY: 0x01, INIT: 0x02, END_OF_UNIT: 0x04, END_OF_STREAM: 0x08,
  COMPRESSED: 0x10, HEADER_CRC: 0x20 });
const FLAGS_ALL = 0x3f;

// The names of the bits set in `value`, in bit order.
const bitNames = (table, value) =>
  Object.entries(table).filter(([, bit]) => (value & bit) === bit).map(([name]) => name);
export const capsNames = (caps) => bitNames(CAPS, caps);
export const flagNames = (flags) => bitNames(FLAG, flags);

// The layouts' own values: protocol/core/src/wire/layout.rs.
const MAGIC = [0x43, 0x4b, 0x43, 0x53]; // "CKCS"
// The page speaks version 2 for the OPEN flag FRAGMENT; it offers no VERIFIED capability, so
// it does not verify streams (PROOF frames never come).
export const VERSION = 2;
const UNKNOWN = 0xffffffffffffffffn;
const CATALOG_LAST = 0x01;
const CATALOG_NOTES = 0x02;
const OPEN_REALTIME = 0x01;
const OPEN_COMPRESS = 0x02;
const OPEN_RAW = 0x04;
const OPEN_FRAGMENT = 0x08;
const OPEN_HEADER_CRC = 0x10;
const RESUME_START = 0;
const RESUME_SEQ = 1;
const RESUME_OFFSET = 2;
const DIGEST_NONE = 0;
const DIGEST_KNOWN = 1;
const DIGEST_AT_END = 2;
const CHUNK_HEADER_LEN = 41;
const CHUNK_CRC_LEN = 4;
// `MediaKind` and `VisualFormat`: protocol/core/src/media.rs.
const KIND_BYTES = 0;
const KIND_AUDIO = 1;
const KIND_VIDEO = 2;
const KIND_IMAGE = 3;
const KINDS = ['bytes', 'audio', 'video', 'image'];
const FORMATS = ['mjpeg', 'y4m', 'mp4', 'png', 'jpeg', 'gif', 'bmp', 'webp', 'tiff', 'fmp4'];
const SAMPLE_FORMATS = ['int', 'float', 'mulaw', 'alaw']; // then SAMPLE_CODED
const SAMPLE_CODED = 4;

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

// CRC32C of `a` followed by `b`, as one contiguous message (check value of "123456789":
// 0xE3069283).
export function crc32c(a, b = new Uint8Array(0)) {
  let c = 0xffffffff;
  for (let i = 0; i < a.length; i++) c = CRC_TABLE[(c ^ a[i]) & 0xff] ^ (c >>> 8);
  for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8', { fatal: true });

class Writer {
  constructor() { this.bytes = []; }
  u8(v) { this.bytes.push(v & 0xff); return this; }
  u16(v) { return this.u8(v >>> 8).u8(v); }
  u32(v) { return this.u16(v >>> 16).u16(v & 0xffff); }
  u64(v) {
    const b = BigInt(v);
    return this.u32(Number((b >> 32n) & 0xffffffffn)).u32(Number(b & 0xffffffffn));
  }
  optU64(v) { return this.u64(v === null || v === undefined ? UNKNOWN : v); }
  raw(bytes) { for (const x of bytes) this.bytes.push(x); return this; }
  str(s) {
    const b = utf8.encode(s);
    return this.u16(b.length).raw(b);
  }
  // The frame: u32 length (type byte + body), type, body.
  frame(type) {
    const out = new Uint8Array(5 + this.bytes.length);
    new DataView(out.buffer).setUint32(0, 1 + this.bytes.length);
    out[4] = type;
    out.set(this.bytes, 5);
    return out;
  }
}

class Reader {
  constructor(bytes, what) {
    this.b = bytes;
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.p = 0;
    this.what = what;
  }
  need(n) { if (this.p + n > this.b.length) throw new Error('truncated ' + this.what + ' frame'); }
  more() { return this.p < this.b.length; }
  u8() { this.need(1); return this.b[this.p++]; }
  u16() { this.need(2); const v = this.dv.getUint16(this.p); this.p += 2; return v; }
  u32() { this.need(4); const v = this.dv.getUint32(this.p); this.p += 4; return v; }
  u64() { this.need(8); const v = this.dv.getBigUint64(this.p); this.p += 8; return v; }
  optU64() { const v = this.u64(); return v === UNKNOWN ? null : v; }
  bytes(n) { this.need(n); const v = this.b.subarray(this.p, this.p + n); this.p += n; return v; }
  str() { return fromUtf8.decode(this.bytes(this.u16())); }
  note() { const s = this.str(); return s === '' ? null : s; }
}

function invalid(field, value) { return new Error('invalid ' + field + ': ' + value); }

// --- codec (in OPENED, CATALOG entries, PUBLISH)

function readCodec(r) {
  const kind = r.u8();
  switch (kind) {
    case KIND_BYTES: return { kind: 'bytes' };
    case KIND_AUDIO: {
      const c = { kind: 'audio', sample_rate: r.u32(), channels: r.u16(), bits_per_sample: r.u16() };
      const f = r.u8();
      if (f < SAMPLE_CODED) c.sample_format = SAMPLE_FORMATS[f];
      else if (f === SAMPLE_CODED) {
        const coded = { tag: r.u16(), block_align: r.u16(), samples_per_block: r.u32() };
        if (coded.block_align === 0) throw invalid('block_align', 0);
        c.sample_format = { coded };
      } else throw invalid('sample format', f);
      return c;
    }
    case KIND_VIDEO: {
      const c = { kind: 'video', format: readFormat(r), width: r.u32(), height: r.u32(),
        fps_num: r.u32(), fps_den: r.u32() };
      if (c.fps_den === 0) throw invalid('fps_den', 0);
      return c;
    }
    case KIND_IMAGE: return { kind: 'image', format: readFormat(r), width: r.u32(),
      height: r.u32(), color: r.u8() };
    default: throw invalid('media kind', kind);
  }
}

function writeCodec(w, c) {
  w.u8(KINDS.indexOf(c.kind));
  switch (c.kind) {
    case 'audio': {
      w.u32(c.sample_rate).u16(c.channels).u16(c.bits_per_sample);
      const f = c.sample_format;
      if (typeof f === 'string') w.u8(SAMPLE_FORMATS.indexOf(f));
      else w.u8(SAMPLE_CODED).u16(f.coded.tag).u16(Math.max(1, f.coded.block_align))
        .u32(f.coded.samples_per_block);
      break;
    }
    case 'video':
      w.u8(FORMATS.indexOf(c.format)).u32(c.width).u32(c.height).u32(c.fps_num)
        .u32(Math.max(1, c.fps_den));
      break;
    case 'image':
      w.u8(FORMATS.indexOf(c.format)).u32(c.width).u32(c.height).u8(c.color);
      break;
  }
}

function readFormat(r) {
  const v = r.u8();
  if (v >= FORMATS.length) throw invalid('visual format', v);
  return FORMATS[v];
}

// --- one entry per frame type: its read and its write.

const LAYOUTS = {
  // magic [4] | min_version u16 | max_version u16 | caps u32 | token str | client_name str
  HELLO: {
    read(r) {
      const magic = r.bytes(4);
      if (magic.some((b, i) => b !== MAGIC[i])) throw new Error('not a chunkcast peer (bad magic)');
      return { min_version: r.u16(), max_version: r.u16(), caps: r.u32(), token: r.str(),
        client_name: r.str() };
    },
    write: (w, f) => w.raw(MAGIC).u16(f.min_version).u16(f.max_version).u32(f.caps).str(f.token)
      .str(f.client_name),
  },
  // version u16 | caps u32 | session_id u64 | server_name str
  WELCOME: {
    read: (r) => ({ version: r.u16(), caps: r.u32(), session_id: r.u64(), server_name: r.str() }),
    write: (w, f) => w.u16(f.version).u32(f.caps).u64(f.session_id).str(f.server_name),
  },
  // request u32 | code u16 | message str
  ERROR: {
    read: (r) => ({ request: r.u32(), code: r.u16(), message: r.str() }),
    write: (w, f) => w.u32(f.request).u16(f.code).str(f.message),
  },
  // nonce u64 | time_us u64
  PING: {
    read: (r) => ({ nonce: r.u64(), time_us: r.u64() }),
    write: (w, f) => w.u64(f.nonce).u64(f.time_us),
  },
  // nonce u64 | echo_us u64 | time_us u64
  PONG: {
    read: (r) => ({ nonce: r.u64(), echo_us: r.u64(), time_us: r.u64() }),
    write: (w, f) => w.u64(f.nonce).u64(f.echo_us).u64(f.time_us),
  },
  // request u32 | prefix str
  LIST: {
    read: (r) => ({ request: r.u32(), prefix: r.str() }),
    write: (w, f) => w.u32(f.request).str(f.prefix),
  },
  // request u32 | flags u8 | count u16 | count × (path str | codec | size opt_u64
  // | duration_us opt_u64 | viewers u32 [| note str, with CATALOG_NOTES])
  CATALOG: {
    read(r) {
      const request = r.u32();
      const flags = r.u8();
      if (flags & ~(CATALOG_LAST | CATALOG_NOTES)) throw invalid('catalog flags', flags);
      const f = { request, last: (flags & CATALOG_LAST) !== 0, entries: [] };
      for (let n = r.u16(); n > 0; n--) {
        f.entries.push({ path: r.str(), codec: readCodec(r), size: r.optU64(),
          duration_us: r.optU64(), viewers: r.u32(),
          note: flags & CATALOG_NOTES ? r.note() : null });
      }
      return f;
    },
    write(w, f) {
      const notes = f.entries.some((e) => e.note !== null && e.note !== undefined);
      w.u32(f.request).u8((f.last ? CATALOG_LAST : 0) | (notes ? CATALOG_NOTES : 0));
      w.u16(f.entries.length);
      for (const e of f.entries) {
        w.str(e.path);
        writeCodec(w, e.codec);
        w.optU64(e.size).optU64(e.duration_us).u32(e.viewers);
        if (notes) w.str(e.note || '');
      }
      return w;
    },
  },
  // request u32 | stream u32 | flags u8 | resume_kind u8 | resume_at u64 | chunk_size u32
  // | path str. `resume` is 'start', {seq} or {offset}.
  OPEN: {
    read(r) {
      const request = r.u32(), stream = r.u32(), flags = r.u8();
      if (flags & ~(OPEN_REALTIME | OPEN_COMPRESS | OPEN_RAW | OPEN_FRAGMENT | OPEN_HEADER_CRC)) {
        throw invalid('open flags', flags);
      }
      const kind = r.u8(), at = r.u64();
      let resume;
      if (kind === RESUME_START) resume = 'start';
      else if (kind === RESUME_SEQ) resume = { seq: at };
      else if (kind === RESUME_OFFSET) resume = { offset: at };
      else throw invalid('resume', kind);
      const chunk_size = r.u32();
      return { request, stream, path: r.str(),
        mode: flags & OPEN_REALTIME ? 'realtime' : 'download', resume,
        compress: (flags & OPEN_COMPRESS) !== 0, raw: (flags & OPEN_RAW) !== 0,
        fragment: (flags & OPEN_FRAGMENT) !== 0, header_crc: (flags & OPEN_HEADER_CRC) !== 0,
        chunk_size };
    },
    write(w, f) {
      const flags = (f.mode === 'realtime' ? OPEN_REALTIME : 0) | (f.compress ? OPEN_COMPRESS : 0)
        | (f.raw ? OPEN_RAW : 0) | (f.fragment ? OPEN_FRAGMENT : 0)
        | (f.header_crc ? OPEN_HEADER_CRC : 0);
      const r = f.resume;
      const [kind, at] = r === 'start' ? [RESUME_START, 0]
        : 'seq' in r ? [RESUME_SEQ, r.seq] : [RESUME_OFFSET, r.offset];
      return w.u32(f.request).u32(f.stream).u8(flags).u8(kind).u64(at).u32(f.chunk_size)
        .str(f.path);
    },
  },
  // request u32 | stream u32 | codec | total_len opt_u64 | chunk_count opt_u64
  // | duration_us opt_u64 | digest_kind u8 [| digest [32]] | start_seq u64 | start_offset u64
  // | chunk_size u32 [| note str]. `digest` is 'none', 'at_end' or {known: Uint8Array}.
  OPENED: {
    read(r) {
      const f = { request: r.u32(), stream: r.u32(), codec: readCodec(r), total_len: r.optU64(),
        chunk_count: r.optU64(), duration_us: r.optU64() };
      const kind = r.u8();
      if (kind === DIGEST_NONE) f.digest = 'none';
      else if (kind === DIGEST_KNOWN) f.digest = { known: r.bytes(32) };
      else if (kind === DIGEST_AT_END) f.digest = 'at_end';
      else throw invalid('digest kind', kind);
      f.start_seq = r.u64();
      f.start_offset = r.u64();
      f.chunk_size = r.u32();
      f.note = r.more() ? r.note() : null;
      return f;
    },
    write(w, f) {
      w.u32(f.request).u32(f.stream);
      writeCodec(w, f.codec);
      w.optU64(f.total_len).optU64(f.chunk_count).optU64(f.duration_us);
      if (f.digest === 'none') w.u8(DIGEST_NONE);
      else if (f.digest === 'at_end') w.u8(DIGEST_AT_END);
      else w.u8(DIGEST_KNOWN).raw(f.digest.known);
      w.u64(f.start_seq).u64(f.start_offset).u32(f.chunk_size);
      if (f.note) w.str(f.note);
      return w;
    },
  },
  // stream u32 | seq u64 | offset u64 | pts_us u64 | duration_us u32 | flags u8 | raw_len u32
  // | crc u32 | payload. The CRC32C covers the header before it, then the payload (the header
  // only with HEADER_CRC, whose payload a tree check covers: the page has none, so its player
  // refuses such chunks); a mismatch is reported in `crc_ok`, not thrown, so that the player
  // can count it and go on.
  CHUNK: {
    read(r) {
      const header = r.bytes(CHUNK_HEADER_LEN - CHUNK_CRC_LEN);
      const h = new Reader(header, 'CHUNK');
      const f = { stream: h.u32(), seq: h.u64(), offset: h.u64(), pts_us: h.u64(),
        duration_us: h.u32(), flags: h.u8(), raw_len: h.u32() };
      const crc = r.u32();
      f.payload = r.bytes(r.b.length - r.p);
      const covered = f.flags & FLAG.HEADER_CRC ? new Uint8Array(0) : f.payload;
      f.crc_ok = crc32c(header, covered) === crc;
      if (f.crc_ok && (f.flags & ~FLAGS_ALL)) throw invalid('chunk flags', f.flags);
      if (f.crc_ok && !(f.flags & FLAG.COMPRESSED) && f.raw_len !== f.payload.length) {
        throw invalid('chunk raw_len', f.raw_len);
      }
      return f;
    },
    write(w, f) {
      const start = w.bytes.length;
      w.u32(f.stream).u64(f.seq).u64(f.offset).u64(f.pts_us).u32(f.duration_us).u8(f.flags)
        .u32(f.raw_len);
      const header = Uint8Array.from(w.bytes.slice(start));
      const covered = f.flags & FLAG.HEADER_CRC ? new Uint8Array(0) : f.payload;
      return w.u32(crc32c(header, covered)).raw(f.payload);
    },
  },
  // stream u32 | code u16 | message str
  CLOSE: {
    read: (r) => ({ stream: r.u32(), code: r.u16(), message: r.str() }),
    write: (w, f) => w.u32(f.stream).u16(f.code).str(f.message),
  },
  // request u32 | stream u32 | channel str | codec
  PUBLISH: {
    read: (r) => ({ request: r.u32(), stream: r.u32(), channel: r.str(), codec: readCodec(r) }),
    write(w, f) { w.u32(f.request).u32(f.stream).str(f.channel); writeCodec(w, f.codec); return w; },
  },
  // request u32 | stream u32 | channel str
  SUBSCRIBE: {
    read: (r) => ({ request: r.u32(), stream: r.u32(), channel: r.str() }),
    write: (w, f) => w.u32(f.request).u32(f.stream).str(f.channel),
  },
  // code u16 | message str
  GOODBYE: {
    read: (r) => ({ code: r.u16(), message: r.str() }),
    write: (w, f) => w.u16(f.code).str(f.message),
  },
  // stream u32 | digest [32]
  DIGEST: {
    read: (r) => ({ stream: r.u32(), digest: r.bytes(32) }),
    write: (w, f) => w.u32(f.stream).raw(f.digest),
  },
  // stream u32 | count u16 | count × node [64] (version 2; the page never receives it)
  PROOF: {
    read(r) { const stream = r.u32(); const count = r.u16(); return { stream, nodes: r.bytes(count * 64) }; },
    write: (w, f) => w.u32(f.stream).u16(f.nodes.length / 64).raw(f.nodes),
  },
  // kind u8 | room str | author u64 | seq u64 | sent_us u64 | text str
  // kind: 0 send, 1 ack, 2 join, 3 message (protocol/core/src/wire/frame.rs, `ChatKind`).
  CHAT: {
    read: (r) => ({ kind: r.u8(), room: r.str(), author: r.u64(), seq: r.u64(),
      sent_us: r.u64(), text: r.str() }),
    write: (w, f) => w.u8(f.kind).str(f.room).u64(f.author).u64(f.seq).u64(f.sent_us)
      .str(f.text),
  },
  // count u8 | count × id u64 (edge to origin; the page never receives it)
  RELAY: {
    read(r) { const count = r.u8(); const path = []; for (let i = 0; i < count; i++) path.push(r.u64()); return { path }; },
    write(w, f) { w.u8(f.path.length); for (const id of f.path) w.u64(id); return w; },
  },
};

// One whole frame (length prefix included) to its object; throws on anything malformed.
export function decodeFrame(bytes) {
  if (bytes.length < 5) throw new Error('truncated frame');
  const len = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0);
  if (len + 4 !== bytes.length) throw new Error('bad frame length');
  const name = FRAME_NAMES.get(bytes[4]);
  if (!name) throw new Error('unknown frame type 0x' + bytes[4].toString(16).padStart(2, '0'));
  const r = new Reader(bytes.subarray(5), name);
  const f = LAYOUTS[name].read(r);
  if (r.more()) throw new Error(name + ' frame has ' + (r.b.length - r.p) + ' trailing bytes');
  return { type: name, ...f };
}

// A frame object to its bytes, length prefix included.
export function encodeFrame(f) {
  const layout = LAYOUTS[f.type];
  if (!layout) throw new Error('unknown frame type ' + f.type);
  const w = new Writer();
  layout.write(w, f);
  return w.frame(FRAME[f.type]);
}
