// Chat beside a live channel (room `live/NAME`): the rules of protocol/core/src/chat.rs
// (Outbox, Inbox) in the page. Lines are numbered per author and kept until the server
// acknowledges them, sent again on a new connection; the room's messages are delivered once
// and in order, a hole asks the server to replay from it. Chat text is hostile input: it is
// only ever put into the page as textContent.

// CHAT kinds (protocol/core/src/wire/frame.rs, `ChatKind`).
export const CHAT = { SEND: 0, ACK: 1, JOIN: 2, MESSAGE: 3 };
// protocol/core/src/wire/frame.rs, `MAX_CHAT_TEXT`: bytes of UTF-8 in one message.
export const MAX_CHAT_TEXT = 4096;
// protocol/core/src/chat.rs, `OutboxConfig::default()`: in flight, burst, per second.
export const MAX_PENDING = 64;
export const BURST = 16;
export const PER_SEC = 5;
// Lines kept in the page's log; older ones are removed.
export const MAX_SHOWN = 200;

// A writer id for this page: random, the same across its reconnections.
function newAuthor() {
  const b = new Uint32Array(2);
  crypto.getRandomValues(b);
  const id = (BigInt(b[0]) << 32n) | BigInt(b[1]);
  return id === 0n ? 1n : id;
}

export class ChatRoom {
  // `send(frame)` puts a frame on the connection; `show(line)` shows a delivered message:
  // { author, mine, seq, text, sentUs, missed }.
  constructor(room, send, show) {
    this.room = room;
    this.author = newAuthor();
    this.sendFrame = send;
    this.show = show;
    this.nextSeq = 1n;
    this.unacked = [];
    this.tokens = BURST;
    this.at = performance.now();
    this.last = 0n;        // the room seq of the last message delivered
    this.joined = false;
    this.rejoining = false;
  }

  // On each (re)connection: where we are in the room, then what the server may not have.
  connected() {
    this.join();
    for (const f of this.unacked) this.sendFrame(f);
  }

  join() {
    this.joined = true;
    this.sendFrame({ type: 'CHAT', kind: CHAT.JOIN, room: this.room, author: this.author,
      seq: this.last, sent_us: 0n, text: '' });
  }

  // Sends a line; returns null, or why it cannot go (yet).
  say(text, sentUs) {
    const len = new TextEncoder().encode(text).length;
    if (len > MAX_CHAT_TEXT) return `the line is ${len} bytes, more than ${MAX_CHAT_TEXT}`;
    if (this.unacked.length >= MAX_PENDING) return `${this.unacked.length} lines await the server`;
    const now = performance.now();
    this.tokens = Math.min(BURST, this.tokens + ((now - this.at) / 1000) * PER_SEC);
    this.at = now;
    if (this.tokens < 1) return 'too fast: wait a moment';
    this.tokens -= 1;
    const f = { type: 'CHAT', kind: CHAT.SEND, room: this.room, author: this.author,
      seq: this.nextSeq, sent_us: sentUs, text };
    this.nextSeq += 1n;
    this.unacked.push(f);
    this.sendFrame(f);
    return null;
  }

  // A CHAT frame from the server for this room.
  frame(f) {
    if (f.room !== this.room) return;
    if (f.kind === CHAT.ACK) {
      if (f.author !== this.author) return;
      while (this.unacked.length && this.unacked[0].seq <= f.seq) this.unacked.shift();
    } else if (f.kind === CHAT.MESSAGE) {
      if (f.seq <= this.last) return; // a replay overlapping what arrived live
      const missed = f.seq - this.last - 1n;
      if (missed > 0n && !this.joined) {
        // A hole (the connection's queue overflowed): ask for a replay from it, once.
        if (!this.rejoining) { this.rejoining = true; this.join(); }
        return;
      }
      this.joined = false;
      this.rejoining = false;
      this.last = f.seq;
      this.show({ author: f.author, mine: f.author === this.author, seq: f.seq, text: f.text,
        sentUs: f.sent_us, missed });
    }
  }

  pending() { return this.unacked.length; }
}

// Appends a delivered line to the log element: text only, never markup.
export function appendLine(ol, line, nowServerUs) {
  const li = document.createElement('li');
  li.className = line.mine ? 'mine' : 'peer';
  const who = document.createElement('b');
  who.textContent = line.mine ? 'me' : 'peer ' + (line.author % 10000n).toString();
  const text = document.createElement('span');
  text.textContent = line.text;
  li.append(who, ' ', text);
  if (line.sentUs > 0n && nowServerUs !== null) {
    const ms = Number(nowServerUs - line.sentUs) / 1000;
    if (ms >= 0 && ms < 3.6e6) {
      const age = document.createElement('small');
      age.textContent = ` (${Math.round(ms)} ms)`;
      li.append(age);
    }
  }
  if (line.missed > 0n) li.title = `${line.missed} earlier lines were no longer held`;
  ol.append(li);
  while (ol.children.length > MAX_SHOWN) ol.firstElementChild.remove();
  ol.scrollTop = ol.scrollHeight;
}
