/**
 * A one-line progress bar for the manual transfers (`upload`, `download`, `restore`) on a terminal:
 *
 *   upload   [██████████░░░░░░░░░░░░░░]  42%  12.3 MiB / 29.0 MiB  8.1 MiB/s
 *
 * It goes to stderr, redrawn in place with a carriage return at most every {@link REDRAW_INTERVAL_MS},
 * so it never mixes with the JSON log lines and `--json` results on stdout. It is drawn only when stderr
 * is a terminal and `--quiet` was not given: in a pipe, a file or CloudWatch a bar is noise.
 * About sixty lines of our own rather than a dependency: one bar, no colours, no multi-bar layout.
 */

/** Fastest redraw: ten times a second is smooth to the eye and costs nothing. */
export const REDRAW_INTERVAL_MS = 100;
const BAR_WIDTH = 24;

export interface ProgressState {
  readonly label: string;
  readonly bytes: number;
  /** Expected total; 0 or less when unknown (no bar or percentage then). */
  readonly totalBytes: number;
  readonly elapsedMs: number;
}

/** `1023 B`, `4.0 KiB`, `12.3 MiB`, `1.50 GiB`. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${Math.max(0, Math.round(bytes))} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit >= 2 ? 2 : 1)} ${units[unit]}`;
}

/** The progress line for a state (pure: no terminal, no clock). */
export function renderProgress(state: ProgressState): string {
  const seconds = state.elapsedMs / 1000;
  const rate = seconds > 0 ? `${formatBytes(state.bytes / seconds)}/s` : '-';
  const label = state.label.padEnd(8);
  if (state.totalBytes <= 0) return `${label} ${formatBytes(state.bytes)}  ${rate}`;
  const fraction = Math.min(1, Math.max(0, state.bytes / state.totalBytes));
  const filled = Math.round(fraction * BAR_WIDTH);
  const bar = `${'█'.repeat(filled)}${'░'.repeat(BAR_WIDTH - filled)}`;
  const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
  return `${label} [${bar}] ${percent}  ${formatBytes(state.bytes)} / ${formatBytes(state.totalBytes)}  ${rate}`;
}

/** Where the bar is drawn: stderr in the CLI, a fake in tests. */
export interface ProgressOutput {
  write(text: string): unknown;
  readonly isTTY?: boolean | undefined;
}

/** One transfer's bar. `update` as bytes move, `done` once at the end (success or failure). */
export class ProgressBar {
  private started: number;
  private lastDraw = -Infinity;
  private last: { bytes: number; total: number } = { bytes: 0, total: 0 };
  private drawn = false;

  constructor(
    private readonly output: ProgressOutput,
    private readonly label: string,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.started = now();
  }

  update(bytes: number, totalBytes: number): void {
    // Fewer bytes than before means the transfer started over (a retry, or the next fallback copy).
    if (bytes < this.last.bytes) this.started = this.now();
    this.last = { bytes, total: totalBytes };
    const t = this.now();
    if (t - this.lastDraw < REDRAW_INTERVAL_MS && bytes < totalBytes) return;
    this.lastDraw = t;
    this.draw(t);
  }

  /** Draw the final state and end the line, so what follows starts on a line of its own. */
  done(): void {
    if (!this.drawn) return;
    this.draw(this.now());
    this.output.write('\n');
    this.drawn = false;
  }

  private draw(t: number): void {
    const line = renderProgress({ label: this.label, bytes: this.last.bytes, totalBytes: this.last.total, elapsedMs: t - this.started });
    // \r back to column 0, ESC[K clears what a longer previous line left.
    this.output.write(`\r${line}\x1b[K`);
    this.drawn = true;
  }
}

/** Makes a bar per transfer; undefined from {@link progressFor} means "draw nothing". */
export type ProgressFactory = (label: string) => ProgressBar;

/** A factory drawing on `output` when it is a terminal and not `quiet`; undefined otherwise. */
export function progressFor(output: ProgressOutput, quiet: boolean): ProgressFactory | undefined {
  if (quiet || output.isTTY !== true) return undefined;
  return (label) => new ProgressBar(output, label);
}
