/** `db-sync backups`: every version of KEY and every timestamped backup, newest first. */
import { listCatalog } from '../core/catalog.js';
import { ExitCode } from '../errors.js';
import type { CommandContext } from './context.js';

export async function backupsCommand(ctx: CommandContext): Promise<number> {
  const entries = await listCatalog(ctx.store, ctx.config.key, { log: ctx.log, signal: ctx.shutdown.graceful, withChecksums: true });
  if (ctx.flags.json) {
    ctx.print(
      JSON.stringify(
        entries.map((e) => ({
          kind: e.kind,
          key: e.key,
          versionId: e.versionId,
          at: e.at.toISOString(),
          sizeBytes: e.sizeBytes,
          isLatest: e.isLatest,
          sha256: e.sha256,
        })),
      ),
    );
    return ExitCode.Ok;
  }
  if (entries.length === 0) {
    ctx.print(`no copies of ${ctx.config.key} in ${ctx.store.location}`);
    return ExitCode.Ok;
  }
  const rows = entries.map((e) => [
    e.at.toISOString().replace('.000Z', 'Z'),
    e.kind === 'version' ? (e.isLatest ? 'latest' : 'version') : 'backup',
    String(e.sizeBytes),
    e.sha256 ? e.sha256.slice(0, 16) : '-',
    e.kind === 'version' ? `--version-id ${e.versionId ?? '-'}` : `--backup ${e.key}`,
  ]);
  const header = ['TIME (UTC)', 'KIND', 'BYTES', 'SHA256', 'RESTORE WITH'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === 2 ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  ctx.print(line(header));
  for (const r of rows) ctx.print(line(r));
  return ExitCode.Ok;
}
