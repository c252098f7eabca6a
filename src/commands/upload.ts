/** `db-sync upload`: one consistent snapshot of the local database, uploaded to KEY. */
import { ExitCode } from '../errors.js';
import { recordSync } from '../core/sync-state.js';
import { snapshotAndUpload } from '../core/upload.js';
import { uploadContext, type CommandContext } from './context.js';

export async function uploadCommand(ctx: CommandContext): Promise<number> {
  const bar = ctx.progress?.('upload');
  const outcome = await snapshotAndUpload(uploadContext(ctx), {
    signal: ctx.shutdown.graceful,
    onProgress: bar ? (sent, total) => bar.update(sent, total) : undefined,
  }).finally(() => bar?.done());
  if (outcome.uploaded) {
    await recordSync(
      ctx.config.localPath,
      { key: ctx.config.key, sha256: outcome.snapshot.sha256, versionId: outcome.uploaded.versionId },
      ctx.log,
    );
  }
  const result = {
    key: ctx.config.key,
    location: ctx.store.location,
    versionId: outcome.uploaded?.versionId,
    sizeBytes: outcome.snapshot.sizeBytes,
    sha256: outcome.snapshot.sha256,
  };
  ctx.print(
    ctx.flags.json
      ? JSON.stringify(result)
      : `uploaded ${result.sizeBytes} bytes to ${ctx.config.key} (${ctx.store.location}) sha256=${result.sha256}`,
  );
  return ExitCode.Ok;
}
