/**
 * Cheap "did the database change?" probes, so an idle database costs no snapshot and no request.
 *
 * Two signals, either of which counts as a change:
 * - `PRAGMA data_version` on a connection kept open for the purpose: it moves whenever another
 *   connection commits, in any process (sqlite.org/pragma.html#pragma_data_version);
 * - a stat fingerprint of the database and its -wal (inode, size, mtime): catches a file replaced
 *   underneath us, and changes made while our connection was not open.
 * A false "changed" only costs a snapshot whose sha256 then matches the last upload, so nothing is sent.
 */
import { stat } from 'node:fs/promises';
import Database from 'better-sqlite3';

async function fileStamp(path: string): Promise<string> {
  try {
    const s = await stat(path, { bigint: true });
    return `${s.ino}:${s.size}:${s.mtimeNs}`;
  } catch {
    return '-';
  }
}

export class ChangeDetector {
  private db: Database.Database | undefined;
  private dbStamp = '';
  private unknownCount = 0;

  constructor(private readonly dbPath: string) {}

  /**
   * A token that changes whenever the database content may have changed; null when the database does not
   * exist. Never throws: a database it cannot read yields a fresh token (counts as changed).
   */
  async probe(): Promise<string | null> {
    const dbStamp = await fileStamp(this.dbPath);
    if (dbStamp === '-') {
      this.close();
      return null;
    }
    // data_version first: opening the probe connection may create the -wal, which must not look like a change.
    const dataVersion = this.dataVersion(dbStamp);
    const walStamp = await fileStamp(`${this.dbPath}-wal`);
    return `${dataVersion}|${dbStamp}|${walStamp}`;
  }

  private dataVersion(dbStamp: string): string {
    const inode = dbStamp.split(':')[0];
    try {
      // Reopen when the file was replaced (new inode): the old connection would watch the old file.
      if (this.db && this.dbStamp.split(':')[0] !== inode) this.close();
      // Read-only: its close can never checkpoint the app's WAL into the main file or delete the -wal. While
      // it is open the app cannot leave WAL mode (journal_mode=DELETE answers SQLITE_BUSY), as with any
      // other open connection.
      this.db ??= new Database(this.dbPath, { fileMustExist: true, timeout: 0, readonly: true });
      this.dbStamp = dbStamp;
      return String(this.db.pragma('data_version', { simple: true }));
    } catch {
      // Locked right now (rollback-journal writer) or unreadable: report "unknown", which differs every time.
      this.close();
      return `unknown-${++this.unknownCount}`;
    }
  }

  /** Close the probe connection. Idempotent. */
  close(): void {
    this.db?.close();
    this.db = undefined;
  }
}
