// The playout rules, the same as the Rust playout buffer's (protocol/media/src/playout/):
// each constant is named after its Rust counterpart and has its default.
//
// - Clock mapping: the first unit that arrives anchors the clock; a unit plays at
//   `anchor + DEFAULT_BUFFER_MS + (pts - first_pts)` (playout/mod.rs, "Clock mapping").
// - Late drop: a unit that arrives after its slot began (its play instant passed by more than
//   DEFAULT_GAP_TOLERANCE_MS), or whose slot a later unit already played, is dropped, not played late
//   (playout/mod.rs, "Gaps").
// - Concealment: a gap plays as silence for audio (`Conceal::Silence`, the default) and
//   freezes on the last frame for video (`Concealment::Freeze`): nothing is scheduled for it,
//   which is exactly that in Web Audio and on a canvas.

// `Config::default().buffer` (playout/types.rs): the delay between the first arrival and its
// play instant, within which late and reordered arrivals are absorbed.
export const DEFAULT_BUFFER_MS = 100;
// `Config::default().gap_tolerance`: gaps and overlaps this small (timestamp rounding) are
// neither concealed nor a reason to drop a unit.
export const DEFAULT_GAP_TOLERANCE_MS = 1;
// `Config::default().max_units`: the most units queued (here: scheduled and not yet played).
// The Rust buffer then drops the unit due first; a unit handed to Web Audio cannot be taken
// back, so the page drops the arriving one instead. Either way memory stays bounded.
export const DEFAULT_MAX_UNITS = 4096;

// One stream's playout clock, on a clock in milliseconds the caller reads (performance.now()
// for pictures, the AudioContext's for sound).
export class PlayoutClock {
  constructor() {
    this.anchor = null; // {ptsUs, at}
    this.headUs = null; // the play head: end of the last unit played (µs of media time)
  }

  // The unit's play instant; the first call anchors the clock at `now`.
  due(ptsUs, now) {
    if (this.anchor === null) this.anchor = { ptsUs, at: now + DEFAULT_BUFFER_MS };
    return this.anchor.at + (ptsUs - this.anchor.ptsUs) / 1000;
  }

  // Whether a unit arriving at `now` is a late drop: its slot began already, or a unit
  // at or after it was played.
  late(ptsUs, now) {
    if (now > this.due(ptsUs, now) + DEFAULT_GAP_TOLERANCE_MS) return true;
    return this.headUs !== null && ptsUs + DEFAULT_GAP_TOLERANCE_MS * 1000 < this.headUs;
  }

  // The unit was played: the play head moves to its end.
  played(ptsUs, durationUs) {
    this.headUs = Math.max(this.headUs ?? 0, ptsUs + durationUs);
  }
}
