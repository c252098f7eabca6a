/** What every command receives from the CLI: settings, a logger, the store and the stop signals. */
import type { Config } from '../config.js';
import type { Origin } from '../core/metadata.js';
import type { UploadContext } from '../core/upload.js';
import type { Shutdown } from '../lifecycle.js';
import type { Logger } from '../logger.js';
import type { ReplicaStore } from '../replica/store.js';

export interface CommandFlags {
  readonly force: boolean;
  readonly versionId: string | undefined;
  readonly json: boolean;
}

export interface CommandContext {
  readonly config: Config;
  readonly log: Logger;
  readonly store: ReplicaStore;
  readonly origin: Origin;
  readonly shutdown: Shutdown;
  readonly flags: CommandFlags;
  /** Write one line of human (or --json) output to stdout. */
  readonly print: (line: string) => void;
}

/** The upload context for this command's configuration. */
export function uploadContext(ctx: CommandContext): UploadContext {
  return {
    store: ctx.store,
    key: ctx.config.key,
    dbPath: ctx.config.localPath,
    check: ctx.config.integrityCheck,
    origin: ctx.origin,
    log: ctx.log,
  };
}
