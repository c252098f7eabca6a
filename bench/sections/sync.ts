/**
 * Steady-state sync for one database size: the upload after the first one, once the app has written
 * `SYNC_NEW_ROWS` new rows and edited `SYNC_EDITED_ROWS` recent ones since the last upload.
 *
 * **db-sync**: `db-sync upload` again on the same database (it finds the block digests of its previous upload
 * beside the database and copies unchanged blocks server-side). **sqlite3+aws**: the script again
 * (`sqlite3 .backup` + `aws s3 cp`: every sync sends everything). Each tool has its own copy of the database
 * and receives the same changes; the first upload of each is not measured. Runs rotate the order.
 *
 * Two change patterns, because where the new rows land decides what a block-level sync can skip:
 * - `scattered`: the new rows belong to random existing users, so the `(user_id, created_at)` index (what a
 *   Django ForeignKey adds) takes them all over its length and nearly every 8 MiB block of the file changes;
 * - `append`: the new rows belong to new users (ids above every existing one), so every index grows at its end,
 *   like an append-only event or audit log: the changed pages are the file's end, the header page, the interior
 *   pages on the way down and the eight `kind` index runs.
 */
import { join } from 'node:path';
import { rotate, liveDb, type Context } from '../lib/context.js';
import { INSERT_SQL, openAppDb, rowFactory, TABLE } from '../lib/dbgen.js';
import * as dbsync from '../lib/dbsync.js';
import type { Usage } from '../lib/proc.js';
import { createBucket } from '../lib/s3.js';
import { median, ratio, round } from '../lib/stats.js';
import { runsFor, scriptUpload, summarize, type SteadySyncResult, type SyncPattern, type ToolResult } from './transfer.js';

export const SYNC_TOOLS = ['db-sync', 'sqlite3+aws'] as const;
export type SyncTool = (typeof SYNC_TOOLS)[number];
export const SYNC_NEW_ROWS = 3_000;
export const SYNC_EDITED_ROWS = 100;
/** New users in the `append` pattern: each makes this many of the new rows. */
const ROWS_PER_NEW_USER = 3;

/** The app's writes between two syncs: new rows, then edits of rows among the newest. Same for every tool. */
function applyChanges(path: string, seed: number, pattern: SyncPattern): void {
  const db = openAppDb(path);
  try {
    const insert = db.prepare(INSERT_SQL);
    const rows = rowFactory(seed, Date.now());
    const maxUser = (db.prepare(`SELECT max(user_id) AS m FROM "${TABLE}"`).get() as { m: number }).m;
    db.transaction(() => {
      for (let i = 0; i < SYNC_NEW_ROWS; i += 1) {
        const row = rows.next(Date.now());
        if (pattern === 'append') row[0] = maxUser + 1 + Math.floor(i / ROWS_PER_NEW_USER);
        insert.run(...row);
      }
    })();
    const maxId = (db.prepare(`SELECT max(id) AS m FROM "${TABLE}"`).get() as { m: number }).m;
    const edit = db.prepare(`UPDATE "${TABLE}" SET "amount_cents" = "amount_cents" + 1, "updated_at" = ? WHERE "id" = ?`);
    for (let i = 0; i < SYNC_EDITED_ROWS; i += 1) edit.run(new Date().toISOString(), maxId - ((i * 29) % SYNC_NEW_ROWS));
  } finally {
    db.close();
  }
}

export async function steadySync(ctx: Context, sizeMB: number, pattern: SyncPattern): Promise<SteadySyncResult> {
  const runs = runsFor(ctx, sizeMB);
  const bucket = `sync-${pattern}-${sizeMB}mb-${Date.now().toString(36)}`;
  await createBucket(ctx.s3, bucket);
  const results: Record<SyncTool, Usage[]> = { 'db-sync': [], 'sqlite3+aws': [] };
  const sent: number[] = [];
  const copied: number[] = [];
  const live = Object.fromEntries(
    SYNC_TOOLS.map((tool) => [tool, liveDb(ctx, sizeMB, `sync-${pattern}-${tool.replace(/\W/g, '')}-${sizeMB}mb.sqlite3`)]),
  ) as Record<SyncTool, ReturnType<typeof liveDb>>;
  const key = (tool: SyncTool): string => `${tool.replace(/\W/g, '')}/${sizeMB}mb.sqlite3`;
  const once = async (tool: SyncTool, log: string): Promise<Usage> => {
    if (tool === 'sqlite3+aws') return scriptUpload(ctx, live[tool].path, bucket, key(tool), log);
    return dbsync.upload(ctx.info, { bucket, key: key(tool), dbPath: live[tool].path }, log, (entry) => {
      sent.push(Number(entry.sentBytes) / 1e6);
      copied.push(Number(entry.copiedBytes) / 1e6);
    });
  };
  let sizeBytes = 0;
  try {
    for (const tool of SYNC_TOOLS) await once(tool, join(ctx.logs, `sync-${pattern}-${sizeMB}mb-first-${tool.replace(/\W/g, '')}.log`));
    sent.length = 0;
    copied.length = 0;
    for (let r = 0; r < runs; r += 1) {
      for (const tool of rotate(SYNC_TOOLS, r)) {
        applyChanges(live[tool].path, 1000 + r, pattern);
        const usage = await once(tool, join(ctx.logs, `sync-${pattern}-${sizeMB}mb-${tool.replace(/\W/g, '')}.log`));
        results[tool].push(usage);
        ctx.log(
          `steady sync (${pattern}) ${sizeMB} MB run ${r + 1}/${runs} ${tool}: ${usage.wallS.toFixed(2)} s, ${usage.maxRssMB.toFixed(0)} MB RSS`,
        );
      }
    }
    sizeBytes = ctx.database(sizeMB).sizeBytes;
  } finally {
    for (const tool of SYNC_TOOLS) live[tool].close();
  }
  const tools: Record<SyncTool, ToolResult> = {
    'db-sync': { runs: results['db-sync'], median: summarize(results['db-sync'], sizeBytes) },
    'sqlite3+aws': { runs: results['sqlite3+aws'], median: summarize(results['sqlite3+aws'], sizeBytes) },
  };
  return {
    sizeMB,
    sizeBytes,
    rows: ctx.database(sizeMB).rows,
    walBytes: 0,
    tools,
    ratios: { 'vs sqlite3+aws': round(ratio(tools['db-sync'].median.wallS, tools['sqlite3+aws'].median.wallS), 2) },
    dbSyncSentMB: round(median(sent), 1),
    dbSyncCopiedMB: round(median(copied), 1),
  };
}
