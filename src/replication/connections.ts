/**
 * The capture's SQLite connections (docs/continuous-replication.md, "Connections"): two pin connections
 * that take turns holding a read transaction, a barrier connection W (BEGIN IMMEDIATE: no commit can land
 * while it is held), a checkpoint connection C, and base connections X opened per base. None of them ever
 * writes the database: W only takes and drops the write lock, C runs PASSIVE checkpoints (which copy
 * committed frames into the file, as the app's own checkpoints do). All with `wal_autocheckpoint=0`.
 *
 * Every call here is short and synchronous (better-sqlite3), on the main thread: BEGIN + one SELECT,
 * ROLLBACK, BEGIN IMMEDIATE with a 100 ms busy timeout, a PASSIVE checkpoint of a bounded WAL.
 */
import Database from 'better-sqlite3';
import { WORKER_CACHE_SIZE } from '../core/sqlite-worker.js';

/** How long the barrier waits for the app's writer before the caller skips (the seal) or retries. */
export const BARRIER_BUSY_MS = 100;

/**
 * Whether the database is in WAL mode; false when absent or unreadable.
 *
 * Asked through SQLite, never by reading the file: closing any descriptor of a file releases every POSIX
 * lock this process holds on it (fcntl semantics), SQLite's included, so a plain open/close of the
 * database would drop the pins' and the snapshots' locks. (Measured: with it, another process's sqlite3
 * could take EXCLUSIVE and delete the -wal and -shm under open connections, which then saw none of the
 * app's later commits.) SQLite itself defers closing a descriptor while a lock on the file is held.
 */
export function isWalDatabase(dbPath: string): boolean {
  let db: Database.Database | undefined;
  try {
    db = new Database(dbPath, { readonly: true, fileMustExist: true, timeout: 0 });
    return String(db.pragma('journal_mode', { simple: true })).toLowerCase() === 'wal';
  } catch {
    return false;
  } finally {
    db?.close();
  }
}

function isBusy(error: unknown): boolean {
  const code = String((error as { code?: unknown }).code ?? '');
  return code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED');
}

/** Begin a read transaction that holds a snapshot (BEGIN alone takes none until the first read). */
function beginRead(db: Database.Database): void {
  db.exec('BEGIN');
  try {
    db.prepare('SELECT 1 FROM sqlite_schema LIMIT 1').get();
  } catch (error) {
    db.exec('ROLLBACK');
    throw error;
  }
}

function rollback(db: Database.Database): void {
  if (db.inTransaction) db.exec('ROLLBACK');
}

export class CaptureConnections {
  private readonly pins: [Database.Database, Database.Database];
  /** Pin connections holding a read transaction, oldest first. */
  private held: number[] = [];
  private readonly barrier: Database.Database;
  private readonly checkpointer: Database.Database;
  private closed = false;

  constructor(readonly dbPath: string) {
    const readOnly = (): Database.Database => {
      const db = new Database(dbPath, { readonly: true, fileMustExist: true });
      db.pragma('wal_autocheckpoint = 0');
      return db;
    };
    const writable = (timeoutMs: number): Database.Database => {
      const db = new Database(dbPath, { fileMustExist: true, timeout: timeoutMs });
      db.pragma('wal_autocheckpoint = 0');
      return db;
    };
    this.pins = [readOnly(), readOnly()];
    this.barrier = writable(BARRIER_BUSY_MS);
    this.checkpointer = writable(BARRIER_BUSY_MS);
  }

  /** Begin a pin on the free pin connection (the newest pin). At most two are held at once. */
  beginPin(): void {
    if (this.held.length >= 2) this.releaseOldestPin();
    const free = this.held.includes(0) ? 1 : 0;
    beginRead(this.pins[free]);
    this.held.push(free);
  }

  /** Release the older pin when two are held (the tick's step 4). */
  releaseOldPin(): void {
    if (this.held.length === 2) this.releaseOldestPin();
  }

  private releaseOldestPin(): void {
    const oldest = this.held.shift();
    if (oldest !== undefined) rollback(this.pins[oldest]!);
  }

  releaseAllPins(): void {
    while (this.held.length > 0) this.releaseOldestPin();
  }

  get pinsHeld(): number {
    return this.held.length;
  }

  /**
   * BEGIN IMMEDIATE on W: from now until {@link endBarrier} no commit can land.
   * @returns false when the app's writer held the lock past the busy timeout.
   */
  tryBarrier(): boolean {
    try {
      this.barrier.exec('BEGIN IMMEDIATE');
      return true;
    } catch (error) {
      if (isBusy(error)) return false;
      throw error;
    }
  }

  endBarrier(): void {
    rollback(this.barrier);
  }

  /** `PRAGMA wal_checkpoint(PASSIVE)`: copy what no reader needs into the file; never waits. */
  checkpointPassive(): { busy: number; logFrames: number; checkpointedFrames: number } {
    const row = this.checkpointer.prepare('PRAGMA wal_checkpoint(PASSIVE)').get() as Record<string, number>;
    return { busy: Number(row.busy), logFrames: Number(row.log), checkpointedFrames: Number(row.checkpointed) };
  }

  /** A new read-only connection X with a read transaction begun at the current position (for a base). */
  openBaseReader(): Database.Database {
    const db = new Database(this.dbPath, { readonly: true, fileMustExist: true });
    db.pragma('wal_autocheckpoint = 0');
    // It reads every page once (the base's backup): a small cache, not better-sqlite3's 16 MB default.
    db.pragma(`cache_size = ${WORKER_CACHE_SIZE}`);
    try {
      beginRead(db);
    } catch (error) {
      db.close();
      throw error;
    }
    return db;
  }

  /**
   * Close everything. The writable connections first: a read-write connection closing last would
   * checkpoint the WAL and delete it, and the read-only pins keep it from being last.
   * Idempotent; never throws.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const db of [this.barrier, this.checkpointer, ...this.pins]) {
      try {
        rollback(db);
        db.close();
      } catch {
        // Closing is best effort: the process is stopping or the generation is being replaced.
      }
    }
    this.held = [];
  }
}
