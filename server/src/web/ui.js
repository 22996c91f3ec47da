// The page: its elements, the counters it exposes (tests read them; a person reads the stats
// box), and the library lists.

import { audioPlayable } from './audio.js';
import { visualPlayable } from './video.js';

export const $ = (id) => document.getElementById(id);

export const stats = window.chunkcast = {
  state: 'connecting', path: null, kind: null, unitsPlayed: 0, unitsReceived: 0, drops: 0,
  gaps: 0, crcFailures: 0, chunks: 0, bytes: 0, lastPtsUs: null, rttMs: null, jitterMs: 0,
  bufferMs: 0, bitrateKbps: 0, error: null, ended: false, paused: false, volume: 1,
  liveLists: 0, live: [],
};

export function setState(state, text) {
  stats.state = state;
  const el = $('status');
  el.dataset.state = state;
  el.textContent = text || state;
}

export function fail(message) {
  stats.error = message;
  setState('error', message);
}

export function resetCounters(path) {
  Object.assign(stats, { path, unitsPlayed: 0, unitsReceived: 0, drops: 0, gaps: 0,
    crcFailures: 0, chunks: 0, bytes: 0, firstPtsUs: null, lastPtsUs: null, jitterMs: 0,
    bufferMs: 0, bitrateKbps: 0, ended: false, error: null, mseTime: null, mseFrames: null });
}

// One line about an entry: its format, duration and (live) viewers.
export function describe(e) {
  const c = e.codec;
  const parts = [];
  if (c.kind === 'audio') {
    parts.push(`${c.sample_rate} Hz ${c.channels}ch ${c.bits_per_sample}-bit`
      + (c.sample_format === 'int' ? '' : ' ' + (c.sample_format.coded ? 'coded' : c.sample_format)));
  } else if (c.kind === 'video' || c.kind === 'image') parts.push(`${c.format} ${c.width}×${c.height}`);
  else parts.push('bytes');
  const duration = e.duration_us === null ? 0 : Number(e.duration_us);
  if (duration > 0) parts.push((duration / 1e6).toFixed(1) + ' s');
  if (e.path.startsWith('live/')) parts.push(e.viewers + ' watching');
  return parts.join(', ');
}

export function playable(c) {
  return c.kind === 'audio' ? audioPlayable(c) : visualPlayable(c);
}

// Fills a list with a button per entry; `onPlay(path)` on a click.
export function fill(ul, entries, onPlay) {
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
    b.onclick = () => onPlay(e.path);
    li.append(b);
    ul.append(li);
  }
  if (!entries.length) ul.textContent = '(none)';
}

// The player box, its controls and the stats appear once something plays.
export function showControls(p) {
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

// The controls once nothing plays any more.
export function disableControls() {
  $('stop').disabled = true;
  $('pause').disabled = true;
}

export function showStats() {
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
