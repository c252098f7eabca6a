import { describe, expect, it } from 'vitest';
import { formatBytes, ProgressBar, progressFor, REDRAW_INTERVAL_MS, renderProgress } from '../../src/commands/progress.js';

const MiB = 1024 * 1024;

describe('formatBytes', () => {
  it.each([
    [0, '0 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [1536, '1.5 KiB'],
    [12.34 * MiB, '12.3 MiB'],
    [3 * 1024 * MiB, '3.00 GiB'],
  ])('%d bytes → %s', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});

describe('renderProgress', () => {
  it('shows bar, percentage, bytes of total and rate', () => {
    expect(renderProgress({ label: 'upload', bytes: 5 * MiB, totalBytes: 10 * MiB, elapsedMs: 2000 })).toBe(
      'upload   [████████████░░░░░░░░░░░░]  50%  5.0 MiB / 10.0 MiB  2.5 MiB/s',
    );
  });

  it('is full at the end and empty at the start', () => {
    expect(renderProgress({ label: 'download', bytes: 2048, totalBytes: 2048, elapsedMs: 1000 })).toBe(
      `download [${'█'.repeat(24)}] 100%  2.0 KiB / 2.0 KiB  2.0 KiB/s`,
    );
    expect(renderProgress({ label: 'restore', bytes: 0, totalBytes: 2048, elapsedMs: 0 })).toBe(
      `restore  [${'░'.repeat(24)}]   0%  0 B / 2.0 KiB  -`,
    );
  });

  it('leaves out bar and percentage when the total is unknown, and caps at 100%', () => {
    expect(renderProgress({ label: 'download', bytes: 3 * MiB, totalBytes: 0, elapsedMs: 1500 })).toBe('download 3.0 MiB  2.0 MiB/s');
    expect(renderProgress({ label: 'upload', bytes: 300, totalBytes: 200, elapsedMs: 1000 })).toContain('100%');
  });
});

/** A fake terminal (or pipe) that records writes, and a clock the test moves. */
function fakeOutput(isTTY: boolean): { isTTY: boolean; writes: string[]; write(text: string): boolean } {
  return {
    isTTY,
    writes: [],
    write(text: string) {
      this.writes.push(text);
      return true;
    },
  };
}

describe('ProgressBar', () => {
  it('redraws in place at most every REDRAW_INTERVAL_MS, always draws the end, and ends the line once', () => {
    const out = fakeOutput(true);
    let now = 0;
    const bar = new ProgressBar(out, 'upload', () => now);
    bar.update(100, 1000);
    now += REDRAW_INTERVAL_MS / 2;
    bar.update(200, 1000); // too soon: skipped
    now += REDRAW_INTERVAL_MS;
    bar.update(500, 1000);
    bar.update(1000, 1000); // complete: drawn at once
    bar.done();
    bar.done();
    expect(out.writes).toHaveLength(5);
    expect(out.writes.slice(0, 4).every((w) => w.startsWith('\r') && w.endsWith('\x1b[K'))).toBe(true);
    expect(out.writes[0]).toContain('  10%');
    expect(out.writes[1]).toContain('  50%');
    expect(out.writes[2]).toContain(' 100%');
    expect(out.writes[4]).toBe('\n');
  });

  it('measures the rate from a restart when the bytes go back (a retry)', () => {
    const out = fakeOutput(true);
    let now = 0;
    const bar = new ProgressBar(out, 'upload', () => now);
    now = 10_000;
    bar.update(900, 1000);
    now = 11_000;
    bar.update(0, 1000);
    now = 12_000;
    bar.update(1000, 1000);
    expect(out.writes.at(-1)).toContain('1000 B/s');
  });

  it('writes nothing on done when nothing was drawn', () => {
    const out = fakeOutput(true);
    new ProgressBar(out, 'upload').done();
    expect(out.writes).toEqual([]);
  });
});

describe('progressFor', () => {
  it('draws only on a terminal and not when quiet', () => {
    expect(progressFor(fakeOutput(false), false)).toBeUndefined();
    expect(progressFor(fakeOutput(true), true)).toBeUndefined();
    expect(progressFor({ write: () => true }, false)).toBeUndefined();
    const out = fakeOutput(true);
    const bar = progressFor(out, false)?.('upload');
    bar?.update(1, 2);
    expect(out.writes).toHaveLength(1);
  });
});
