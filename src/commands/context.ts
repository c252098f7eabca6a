/** What every command receives from the CLI: settings, a logger, the store and the stop signals. */
import type { Config } from '../config.js';
import type { Origin } from '../core/metadata.js';
import type { RetentionPolicy } from '../core/retention.js';
import type { UploadContext } from '../core/upload.js';
import type { Shutdown } from '../lifecycle.js';
import type { Logger } from '../logger.js';
import type { ReplicaStore } from '../replica/store.js';
import type { ProgressFactory } from './progress.js';

export interface CommandFlags {
  readonly force: boolean;
  readonly versionId: string | undefined;
  readonly json: boolean;
  /** restore: a point in time (ISO 8601). */
  readonly at: string | undefined;
  /** restore: a backup key to restore. */
  readonly backup: string | undefined;
  /** restore: where to write. */
  readonly to: string | undefined;
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
  /** The command line after `--` (`db-sync exec -- <command> [args…]`); empty for other commands. */
  readonly childCommand: readonly string[];
  /**
   * Subscribe to the signals the CLI receives: SIGTERM and SIGINT (after {@link shutdown} has been told),
   * and SIGHUP for commands that forward signals (`exec`). Returns a function that unsubscribes.
   * This is how `exec` forwards signals to its child without touching `process` itself.
   */
  readonly onSignal: (listener: (signal: NodeJS.Signals) => void) => () => void;
  /** Progress bars for manual transfers; absent when stderr is not a terminal or with `--quiet`. */
  readonly progress?: ProgressFactory | undefined;
  /** Removes the secret values the CLI knows of from a text (health server bodies); identity when absent. */
  readonly scrub?: ((text: string) => string) | undefined;
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

/** The backup retention policy for this command's configuration. */
export function retentionPolicy(ctx: CommandContext): RetentionPolicy {
  return { keepCount: ctx.config.keepBackups, keepDays: ctx.config.keepBackupsDays };
}
