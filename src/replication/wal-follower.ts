/**
 * Following one database's `-wal` file from tick to tick: where reading continues, whether the WAL is
 * still the same chain of frames (docs/continuous-replication.md, "Continuity"), and the committed frames
 * that arrived since. The caller holds the pins that keep unread frames from being overwritten.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { continuity, cursorAtStart, frameWaiting, lookAtWal, scanFrames, type WalCursor, type WalFrame, type WalScan } from './wal.js';

/** An invalid header seen this many reads in a row is not a torn read in progress: continuity is broken. */
export const INVALID_HEADER_LIMIT = 5;

export type FollowOutcome =
  /** Nothing new (an unchanged WAL, an empty one, or only an uncommitted tail). */
  | { readonly kind: 'idle' }
  /** Committed frames were consumed (handed to the consumer). */
  | { readonly kind: 'frames'; readonly scan: WalScan; readonly restarted: boolean }
  /** Continuity is broken: the caller starts a new generation. */
  | { readonly kind: 'broken'; readonly reason: string };

/**
 * Reads committed frames. `consume` gets the scan and a page reader bound to the open file; it must read
 * every page it needs before returning. If the WAL's header changed while it read (it cannot while the
 * pins hold; checked anyway), the outcome is `broken` and the caller drops what it consumed.
 */
export type FrameConsumer = (scan: WalScan, readPage: (frame: WalFrame) => Promise<Buffer>) => Promise<void>;

export class WalFollower {
  private cursorValue: WalCursor | undefined;
  private invalidReads = 0;
  /** The -wal file's inode since the chain began following it. */
  private ino: number | undefined;

  constructor(readonly walPath: string) {}

  /** Where the next read starts; undefined before the first header was seen. */
  get cursor(): WalCursor | undefined {
    return this.cursorValue;
  }

  /** Forget the position: the next header seen, whatever its salts, starts the chain (a new generation). */
  reset(): void {
    this.cursorValue = undefined;
    this.invalidReads = 0;
    this.ino = undefined;
  }

  /** Read whatever was committed since the cursor. Never throws for a missing file (that is an empty WAL). */
  async poll(consume: FrameConsumer): Promise<FollowOutcome> {
    let handle: FileHandle;
    try {
      handle = await open(this.walPath, 'r');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'idle' };
      throw error;
    }
    try {
      return await this.pollOpen(handle, consume);
    } finally {
      await handle.close();
    }
  }

  private async pollOpen(handle: FileHandle, consume: FrameConsumer): Promise<FollowOutcome> {
    const look = await lookAtWal(handle);
    // SQLite deletes the -wal only when the last connection closes, which the pins prevent; a new file
    // means someone removed it under open connections, which then no longer see what the app writes.
    if (this.ino !== undefined && look.ino !== this.ino) {
      return { kind: 'broken', reason: 'the -wal file was deleted and created again under open connections' };
    }
    this.ino = look.ino;
    if (look.kind === 'empty') {
      this.invalidReads = 0;
      return { kind: 'idle' };
    }
    if (look.kind === 'invalid') {
      // A header being written right now reads torn; one that stays invalid is not that.
      if (++this.invalidReads >= INVALID_HEADER_LIMIT) return { kind: 'broken', reason: `the WAL header is invalid: ${look.reason}` };
      return { kind: 'idle' };
    }
    this.invalidReads = 0;
    let from = this.cursorValue;
    let restarted = false;
    if (!from) from = cursorAtStart(look.header);
    else {
      const c = continuity(from.header, look.header);
      if (c.kind === 'broken') return c;
      if (c.kind === 'restarted') {
        from = cursorAtStart(look.header);
        restarted = true;
      }
    }
    if (!(await frameWaiting(handle, from, look.sizeBytes))) {
      // A restart with no committed frame yet: adopt the new header now, so later reads compare with it.
      if (restarted || !this.cursorValue) this.cursorValue = from;
      return { kind: 'idle' };
    }
    const scan = await scanFrames(handle, from, look.sizeBytes);
    if (scan.frames.length === 0) {
      if (restarted || !this.cursorValue) this.cursorValue = from;
      return { kind: 'idle' };
    }
    await consume(scan, async (frame) => {
      const page = Buffer.allocUnsafe(from.header.pageSize);
      const { bytesRead } = await handle.read(page, 0, page.length, frame.dataOffset);
      if (bytesRead !== page.length) throw new Error(`WAL frame ${frame.frame}: read ${bytesRead} of ${page.length} bytes`);
      return page;
    });
    const after = await lookAtWal(handle);
    if (after.kind !== 'header' || after.header.salt1 !== from.header.salt1 || after.header.salt2 !== from.header.salt2) {
      return { kind: 'broken', reason: 'the WAL was restarted while it was being read' };
    }
    this.cursorValue = scan.cursor;
    return { kind: 'frames', scan, restarted };
  }
}
