/**
 * Benchmark databases: a Django-style table with ints, text, timestamps, a boolean and two indexes,
 * filled with seeded pseudo-random rows (English-like words, so the data compresses like real text,
 * which matters for Litestream's lz4 snapshots) until the file reaches the target size. WAL mode.
 */
import { statSync } from 'node:fs';
import Database from 'better-sqlite3';

export const TABLE = 'app_event';

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS "${TABLE}" (
  "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
  "user_id" integer NOT NULL,
  "kind" varchar(32) NOT NULL,
  "title" varchar(200) NOT NULL,
  "body" text NOT NULL,
  "amount_cents" bigint NOT NULL,
  "is_active" bool NOT NULL,
  "created_at" datetime NOT NULL,
  "updated_at" datetime NOT NULL
);
CREATE INDEX IF NOT EXISTS "app_event_user_id_created_at_idx" ON "${TABLE}" ("user_id", "created_at");
CREATE INDEX IF NOT EXISTS "app_event_kind_idx" ON "${TABLE}" ("kind");
`;

export const INSERT_SQL =
  `INSERT INTO "${TABLE}" ("user_id", "kind", "title", "body", "amount_cents", "is_active", "created_at", "updated_at") ` +
  'VALUES (?, ?, ?, ?, ?, ?, ?, ?)';

const WORDS = (
  'the of and to in is was for on that with as by at from his her it an were are which this be or has had not ' +
  'order payment invoice customer account user session update delete create product price shipping address ' +
  'city street country email phone status pending active closed refund discount coupon cart checkout review ' +
  'rating comment message notification report export import schedule meeting project task milestone release ' +
  'database backup restore server request response timeout error warning success failure retry queue worker'
).split(' ');
const KINDS = ['order.created', 'order.paid', 'order.shipped', 'user.login', 'user.signup', 'comment.added', 'invoice.sent', 'refund'];

/** Mulberry32: a tiny seeded PRNG, so every run generates the same rows. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type Row = [number, string, string, string, number, number, string, string];

/** A row generator: `next()` returns the parameters for {@link INSERT_SQL}. */
export function rowFactory(seed: number, startMs = Date.UTC(2024, 0, 1)): { next(atMs?: number): Row } {
  const rand = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const words = (n: number): string => {
    const out: string[] = [];
    for (let i = 0; i < n; i += 1) out.push(pick(WORDS));
    return out.join(' ');
  };
  let clock = startMs;
  return {
    next(atMs?: number): Row {
      clock += Math.floor(rand() * 2000);
      const created = new Date(atMs ?? clock).toISOString().replace('T', ' ').replace('Z', '');
      const title = words(4 + Math.floor(rand() * 6));
      const body = words(20 + Math.floor(rand() * 60));
      return [
        1 + Math.floor(rand() * 50_000),
        pick(KINDS),
        title,
        body,
        Math.floor(rand() * 1_000_000),
        rand() < 0.8 ? 1 : 0,
        created,
        created,
      ];
    },
  };
}

/** Open (or create) a benchmark database the way a Django app would: WAL (or `journalMode`), default synchronous. */
export function openAppDb(path: string, journalMode = 'wal'): Database.Database {
  const db = new Database(path, { timeout: 10_000 });
  db.pragma(`journal_mode = ${journalMode}`);
  db.exec(SCHEMA);
  return db;
}

/**
 * Create `path` with rows until the database file reaches `targetBytes`; checkpoint so the WAL is empty.
 * @returns the row count.
 */
export function generateDatabase(path: string, targetBytes: number, seed = 1): { rows: number; sizeBytes: number } {
  const db = openAppDb(path);
  try {
    const insert = db.prepare(INSERT_SQL);
    const rows = rowFactory(seed);
    const batch = db.transaction((n: number) => {
      for (let i = 0; i < n; i += 1) insert.run(...rows.next());
    });
    const pageSize = Number(db.pragma('page_size', { simple: true }));
    let count = 0;
    for (;;) {
      const bytes = Number(db.pragma('page_count', { simple: true })) * pageSize;
      if (bytes >= targetBytes) break;
      // Estimate ~450 bytes per row (data + indexes) so the last batches approach the target gently.
      const n = Math.max(500, Math.min(50_000, Math.floor((targetBytes - bytes) / 450)));
      batch(n);
      count += n;
    }
    db.pragma('wal_checkpoint(TRUNCATE)');
    return { rows: count, sizeBytes: statSync(path).size };
  } finally {
    db.close();
  }
}
