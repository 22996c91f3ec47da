// chunkcast web viewer, the entry module: the chunkcast protocol (docs/PROTOCOL.md) over a
// WebSocket, and playback of WAV (Web Audio), MJPEG and Y4M (canvas) and images. No build
// step: plain ES modules, served by `chunkcast-server --web ADDR`.
//
// wire.js is the frame codec, connection.js the handshake, keepalive and requests,
// playout.js the playout rules, audio.js, video.js and mse.js (fragmented MP4) the outputs,
// chat.js the chat beside a live channel, player.js one stream
// being played, ui.js the page's elements and counters; httpsource.js plays over the HTTP
// interface instead of the WebSocket when the page is opened with `?http=URL` (a page served
// from a CDN, no WebSocket at all).

import { errorName } from './wire.js';
import { Connection } from './connection.js';
import { Player } from './player.js';
import { msePlayable } from './mse.js';
import { ChatRoom, appendLine } from './chat.js';
import { HttpError, HttpSource, playHttp } from './httpsource.js';
import { $, fail, fill, resetCounters, setState, showControls, stats } from './ui.js';

// The viewer counts change while the page is open: the live list is asked for again this
// often (a LIST of `live/` costs the server a lock and a few bytes).
const LIVE_POLL_MS = 3000;

let conn = null;
let player = null;
let liveTimer = null;
// The chat of the live channel being watched (room `live/NAME`), if any.
let chat = null;
// A lost connection is made again after this long (doubling up to RECONNECT_MAX_MS); a live
// channel being watched is then watched again, and its chat rejoined with its unacknowledged
// lines resent (chat.js), so that no line is lost or shown twice.
const RECONNECT_MS = 500;
const RECONNECT_MAX_MS = 8000;
let token = '';
let reconnectMs = RECONNECT_MS;
let rewatch = null;
let everReady = false;
// `?http=URL`: files and live channels come from that HTTP origin or cache (httpsource.js).
const httpBase = new URLSearchParams(location.search).get('http');
const source = httpBase ? new HttpSource(httpBase) : null;

function connect(t) {
  token = t;
  setState('connecting', 'connecting…');
  conn = new Connection(token, {
    onReady(welcome) {
      everReady = true;
      reconnectMs = RECONNECT_MS;
      stats.connections = (stats.connections || 0) + 1;
      $('login').hidden = true;
      setState('ready', 'connected to ' + (welcome.server_name || 'server'));
      clearInterval(liveTimer);
      liveTimer = setInterval(refreshLive, LIVE_POLL_MS);
      if (chat) chat.connected();
      const again = rewatch;
      rewatch = null;
      refresh().then(() => (again ? play(again) : openFragment()));
    },
    onLogin(message) {
      setState('login', message);
      $('login').hidden = false;
      $('token').focus();
    },
    onFail: fail,
    onClosed() {
      clearInterval(liveTimer);
      if (player) player.stop(false);
      // Connected before and not refused: connect again (the server restarted, the network
      // blinked); a refusal or a first connection that failed is shown instead.
      if (everReady && stats.state !== 'error' && stats.state !== 'login') {
        if (player && player.path && player.path.startsWith('live/')) rewatch = player.path;
        setState('reconnecting', 'connection lost; reconnecting…');
        setTimeout(() => connect(token), reconnectMs);
        reconnectMs = Math.min(RECONNECT_MAX_MS, reconnectMs * 2);
        return;
      }
      if (stats.state !== 'error' && stats.state !== 'login') fail('connection closed');
    },
    onRtt(ms) { stats.rttMs = ms; },
    onChat(f) { if (chat) chat.frame(f); },
    onChunk(f) { if (player && player.stream === f.stream) player.chunk(f); },
    onClose(f) {
      if (player && player.stream === f.stream) {
        player.finish(f.code ? errorName(f.code) + (f.message ? ': ' + f.message : '') : null);
      }
    },
    onGoodbye(f) {
      fail('server closed the connection: ' + errorName(f.code) + (f.message ? ': ' + f.message : ''));
    },
  });
}

async function refreshLive() {
  try {
    const live = await conn.list('live/');
    fill($('live'), live, play);
    stats.live = live.map((e) => ({ path: e.path, viewers: e.viewers }));
    stats.liveLists++;
  } catch (e) {
    // A refused poll (over the request rate, say) is not worth an error: the next one retries.
  }
}

async function refresh() {
  try {
    const [files, live] = await Promise.all([conn.list(''), conn.list('live/')]);
    fill($('catalog'), files.filter((e) => !e.path.startsWith('live/')), play);
    fill($('live'), live, play);
    stats.catalog = files.map((e) => e.path);
    stats.live = live.map((e) => ({ path: e.path, viewers: e.viewers }));
  } catch (e) {
    fail(e.message);
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

// Opens `path` and plays it; `fromUs` starts a file at that media time (seek, or resume after
// a pause) by asking for the chunk that carries it.
async function play(path, fromUs = 0, estimate = null) {
  if (player) player.stop(true);
  resetCounters(path);
  const link = '#/' + encodeURI(path);
  if (location.hash !== link) history.replaceState(null, '', link);
  if (source) { playOverHttp(path); return; }
  const stream = conn.stream();
  const live = path.startsWith('live/');
  openChat(live ? path : null);
  // Route chunks to a placeholder until OPENED tells what they are.
  const early = [];
  player = { stream, path, chunk: (c) => early.push(c), finish: () => {}, stop: () => {} };
  const mine = player;
  setState('opening', 'opening ' + path);
  let opened;
  try {
    if (live) opened = await conn.subscribe(stream, path);
    else {
      // From the start, or from the chunk that carries `fromUs` (a constant rate is assumed:
      // chunks cut at the same size as the first open, chosen by the server).
      const seq = estimate && fromUs > 0
        ? Math.min(estimate.chunks - 1, Math.floor((fromUs / estimate.durationUs) * estimate.chunks))
        : 0;
      // MP4 files come fragmented, for Media Source Extensions.
      opened = await conn.open(stream, path, seq, msePlayable() && /\.(mp4|m4v|mov)$/i.test(path));
    }
  } catch (e) {
    if (player === mine) { player = null; fail(e.message); }
    return;
  }
  if (player !== mine) return;
  const c = opened.codec;
  stats.kind = c.kind === 'bytes' ? 'bytes' : c.kind + (c.format ? '/' + c.format : '');
  player = new Player(stream, c, opened, path, estimate, () => conn.cancel(stream));
  for (const ch of early) player.chunk(ch);
  setState('playing', 'playing ' + path);
  stats.paused = false;
  showControls(player);
}

// Plays `path` from the HTTP interface: the same Player, its chunks fetched by httpsource.js.
function playOverHttp(path) {
  openChat(null);
  setState('opening', 'opening ' + path + ' over HTTP');
  // Until the codec is known: stopping stops the requests.
  let handle = null;
  const mine = { path, stream: null, chunk() {}, finish() {}, stop: () => handle && handle.stop() };
  player = mine;
  handle = playHttp(source, path, {
    onPlayer(p) {
      if (player !== mine) { p.stop(false); return; }
      player = p;
      const c = p.codec;
      stats.kind = c.kind === 'bytes' ? 'bytes' : c.kind + (c.format ? '/' + c.format : '');
      setState('playing', 'playing ' + path + ' over HTTP');
      stats.paused = false;
      showControls(p);
    },
    onFail(message, e) {
      if (player !== mine) return;
      player = null;
      if (e instanceof HttpError && e.status === 401) {
        setState('login', message);
        $('login').hidden = false;
        $('token').focus();
      } else fail(message);
    },
  });
}

// Shows the chat of `room` (a live channel's path), or hides it (null).
function openChat(room) {
  if (chat && chat.room === room) return;
  chat = null;
  $('chat').hidden = room === null;
  $('chat-log').replaceChildren();
  $('chat-note').textContent = '';
  stats.chatLines = 0;
  if (room === null) return;
  chat = new ChatRoom(room, (f) => conn.send(f), (line) => {
    stats.chatLines++;
    appendLine($('chat-log'), line, conn.serverNowUs());
  });
  chat.connected();
}

function say(text) {
  if (!chat || !text) return false;
  const why = chat.say(text, conn.serverNowUs() ?? 0n);
  $('chat-note').textContent = why || '';
  return why === null;
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
  if (!player || !player.seekable || !player.seekable()) return;
  play(player.path, Math.round(seconds * 1e6), player.estimate());
}

$('login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const token = $('token').value;
  $('token').value = '';
  if (source) {
    source.token = token;
    $('login').hidden = true;
    setState('ready', 'HTTP: ' + httpBase);
    openFragment();
    return;
  }
  connect(token);
});
$('open').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const path = $('open-path').value.trim();
  if (path) play(path);
});
$('refresh').onclick = () => refresh();
$('chat-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (say($('chat-text').value)) $('chat-text').value = '';
});
$('stop').onclick = () => {
  if (player) { player.stop(true); setState('ready', 'stopped'); }
  stats.paused = false;
  $('pause').disabled = true;
};
$('pause').onclick = pause;
$('seek').addEventListener('change', () => seek(Number($('seek').value)));
$('volume').addEventListener('input', () => {
  stats.volume = Number($('volume').value);
  if (player && player.setVolume) player.setVolume(stats.volume);
});
window.addEventListener('hashchange', () => { if (stats.state !== 'connecting') openFragment(); });
window.chunkcastPlay = play;
window.chunkcastChatPending = () => (chat ? chat.pending() : null);
// For the browser test: drop the connection as a network failure would.
window.chunkcastDropConnection = () => conn.close();
window.chunkcastPause = pause;
window.chunkcastSeek = seek;
window.chunkcastGain = () => (player && player.gain ? player.gain() : null);
if (source) {
  // No listing over HTTP: a path is typed, or given as `#/PATH`.
  $('open').hidden = false;
  $('refresh').hidden = true;
  setState('ready', 'HTTP: ' + httpBase);
  openFragment();
} else connect('');
