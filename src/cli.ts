#!/usr/bin/env node
/**
 * The command line: the only module that reads `process` (argv, env, signals) and sets the exit code.
 * It parses flags, builds the configuration, logger and store, installs signal handlers, runs one
 * command and turns its result or error into a documented exit code (README, "Exit codes").
 */
import { hostname } from 'node:os';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ENV_VARS, loadConfig, SETTINGS, type Config, type Setting } from './config.js';
import { DbSyncError, ExitCode, exitCodeFor, toError } from './errors.js';
import { Shutdown } from './lifecycle.js';
import { createLogger, secretScrubber, type Logger } from './logger.js';
import { createStore } from './replica/create-store.js';
import { VERSION } from './version.js';
import type { CommandContext } from './commands/context.js';
import { progressFor } from './commands/progress.js';
import { downloadCommand } from './commands/download.js';
import { EXEC_EXIT_CODES, execCommand } from './commands/exec.js';
import { healthCommand } from './commands/health.js';
import { runCommand } from './commands/run.js';
import { shutdownCommand, startupCommand } from './commands/startup.js';
import { uploadCommand } from './commands/upload.js';
import { backupsCommand } from './commands/backups.js';
import { restoreCommand } from './commands/restore.js';
import { verifyCommand } from './commands/verify.js';
import { leaseCommand } from './commands/lease.js';
import { ecsTaskFromMetadataUri, type LeaseHolderInfo } from './core/lease.js';

type Command = (ctx: CommandContext) => Promise<number>;

interface CommandSpec {
  readonly summary: string;
  readonly run?: Command;
  /** Takes a command line after `--` and has SIGHUP forwarded to it as well (`exec`). */
  readonly takesCommand?: boolean;
}

const COMMANDS: Readonly<Record<string, CommandSpec>> = {
  run: { summary: 'daemon: restore if needed, sync every interval, final upload + backup key on SIGTERM', run: runCommand },
  exec: {
    summary: 'as run, with the app as child: restore, start `-- <command>`, forward signals, final sync when it exits',
    run: execCommand,
    takesCommand: true,
  },
  upload: { summary: 'take one consistent snapshot and upload it to KEY', run: uploadCommand },
  download: { summary: 'restore the newest good copy (or --version-id) to DB_LOCAL_PATH; --force to replace', run: downloadCommand },
  startup: {
    summary:
      "the old script's start verb, prepared as run does: restore when there is no local database; else keep it, replace it (kept as .backup) or refuse a conflict (exit 5)",
    run: startupCommand,
  },
  shutdown: { summary: "the old script's stop verb: final upload and KEY.backup.YYYYMMDD_HHMMSS", run: shutdownCommand },
  restore: {
    summary: 'verified restore of the newest good copy, --at TIME, --version-id or --backup KEY, --to PATH (default a new file)',
    run: restoreCommand,
  },
  backups: { summary: 'list every version of KEY and every timestamped backup, newest first (--json for scripts)', run: backupsCommand },
  verify: {
    summary: 'restore drill: download the latest snapshot to a temp file, check sha256 + integrity, exit non-zero if bad',
    run: verifyCommand,
  },
  lease: { summary: 'show who holds the single-writer lease of KEY (--json); --force breaks it', run: leaseCommand },
  health: { summary: 'probe a running daemon: exit 0 when ready (--live: when alive), 8 otherwise' },
};

/**
 * Flags that are not settings. `for` names the commands that read the flag: any other command refuses it
 * (exit 2) rather than ignore it, so `download --to PATH` cannot quietly write somewhere else.
 */
const COMMAND_OPTIONS = {
  force: {
    type: 'boolean',
    for: ['download', 'restore', 'lease'],
    description: 'download, restore: replace an existing local database (kept as .backup); lease: break the lease',
  },
  'version-id': { type: 'string', for: ['download', 'restore', 'verify'], description: 'download, restore, verify: this object version' },
  at: { type: 'string', for: ['restore'], description: 'restore: the newest version stored at or before this ISO-8601 time' },
  backup: { type: 'string', for: ['restore'], description: 'restore: this backup key (e.g. db.sqlite3.backup.20261123_103729)' },
  to: { type: 'string', for: ['restore'], description: 'restore: write here (default DB_LOCAL_PATH.restored.YYYYMMDD_HHMMSS)' },
  json: {
    type: 'boolean',
    for: ['upload', 'download', 'startup', 'shutdown', 'restore', 'backups', 'verify', 'lease'],
    description: 'print the result as one JSON line',
  },
  live: { type: 'boolean', for: ['health'], description: 'health: check liveness (/healthz) instead of readiness' },
  quiet: { type: 'boolean', short: 'q', description: 'upload, download, restore: no progress bar (drawn only when stderr is a terminal)' },
  help: { type: 'boolean', short: 'h', description: 'show this help' },
  version: { type: 'boolean', short: 'v', description: 'print the version' },
} as const satisfies Record<string, { type: 'boolean' | 'string'; short?: string; for?: readonly string[]; description: string }>;

/** The first command-specific flag given to a command that does not read it, as a usage error message. */
function misplacedFlag(command: string, tokens: readonly { kind: string; name?: string }[]): string | undefined {
  for (const token of tokens) {
    if (token.kind !== 'option' || token.name === undefined || !(token.name in COMMAND_OPTIONS)) continue;
    const option = COMMAND_OPTIONS[token.name as keyof typeof COMMAND_OPTIONS];
    if ('for' in option && !(option.for as readonly string[]).includes(command)) {
      return `--${token.name} is not an option of ${command} (it is for: ${option.for.join(', ')})`;
    }
  }
  return undefined;
}

function parseOptions(): ParseArgsConfig['options'] {
  const options: NonNullable<ParseArgsConfig['options']> = {};
  for (const s of SETTINGS as readonly Setting[]) options[s.flag] = { type: s.boolean ? 'boolean' : 'string' };
  for (const [name, o] of Object.entries(COMMAND_OPTIONS)) {
    options[name] = 'short' in o ? { type: o.type, short: o.short } : { type: o.type };
  }
  return options;
}

/** The help text, built from the command and settings tables so it cannot drift from the code. */
export function helpText(): string {
  const lines = [
    `db-sync ${VERSION}: keep a SQLite database durable in a versioned S3 bucket`,
    '',
    'Usage: db-sync <command> [flags]',
    '       db-sync exec [flags] -- <command> [args…]',
    '',
    'Commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`),
    '',
    'Settings (flag / environment variable, default):',
    ...(SETTINGS as readonly Setting[]).map((s) => `  --${s.flag.padEnd(18)} ${s.env.padEnd(26)} ${s.description} [${s.defaultText}]`),
    '',
    'Other flags:',
    ...Object.entries(COMMAND_OPTIONS).map(([name, o]) => `  --${name.padEnd(18)} ${o.description}`),
    '',
    'Exit codes:',
    ...Object.entries(ExitCode).map(([name, code]) => `  ${String(code).padStart(3)}  ${name}`),
    '',
    'Exit codes of exec (the app is the child; db-sync reports its result, as a shell would):',
    ...EXEC_EXIT_CODES.map(([code, meaning]) => `  ${code.padStart(5)}  ${meaning}`),
    '',
    'Credentials come from the AWS SDK default chain (task role, AWS_* env, profile).',
  ];
  return lines.join('\n');
}

/** Secret values from the environment, scrubbed from every log line, error and health body as a last defence. */
const scrub = secretScrubber([process.env.AWS_SECRET_ACCESS_KEY, process.env.AWS_SESSION_TOKEN, process.env.AWS_SECURITY_TOKEN]);

function printError(error: unknown, log: Logger | undefined): void {
  const err = toError(error);
  const hint = err instanceof DbSyncError ? err.hint : undefined;
  // A string, as every other log line has it: pino's error serializer turns a plain object into {"type":"Object","stack":""}.
  log?.error({ err: err.message, kind: err instanceof DbSyncError ? err.kind : 'Failure', hint }, 'command failed');
  process.stderr.write(scrub(`db-sync: ${err.message}\n${hint ? `  hint: ${hint}\n` : ''}`));
}

async function main(argv: readonly string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options: parseOptions(), allowPositionals: true, strict: true, tokens: true });
  } catch (error) {
    process.stderr.write(`db-sync: ${(error as Error).message}\n  hint: see \`db-sync --help\`\n`);
    return ExitCode.Usage;
  }
  const { positionals } = parsed;
  // Everything after the first `--` is the child's command line (exec), passed on untouched.
  const terminator = parsed.tokens.find((t) => t.kind === 'option-terminator');
  const childCommand = terminator ? argv.slice(terminator.index + 1) : [];
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (values.version) {
    process.stdout.write(`${VERSION}\n`);
    return ExitCode.Ok;
  }
  const name = positionals[0];
  if (values.help || name === undefined || name === 'help') {
    process.stdout.write(`${helpText()}\n`);
    return name === undefined && !values.help ? ExitCode.Usage : ExitCode.Ok;
  }
  const spec = COMMANDS[name];
  if (!spec) {
    process.stderr.write(`db-sync: unknown command "${name}"\n  hint: commands are ${Object.keys(COMMANDS).join(', ')}\n`);
    return ExitCode.Usage;
  }
  // Tokens after `--` belong to exec's child and are not db-sync's flags.
  const ownTokens = parsed.tokens.filter((t) => !terminator || t.index < terminator.index);
  const misplaced = misplacedFlag(name, ownTokens);
  if (misplaced) {
    process.stderr.write(`db-sync: ${misplaced}\n  hint: see \`db-sync --help\`\n`);
    return ExitCode.Usage;
  }
  if (spec.takesCommand && positionals.length - childCommand.length > 1) {
    process.stderr.write(
      `db-sync: unexpected argument "${positionals[1]}"\n  hint: put the command after --: db-sync ${name} -- <command> [args…]\n`,
    );
    return ExitCode.Usage;
  }
  if (!spec.takesCommand && positionals.length > 1) {
    process.stderr.write(`db-sync: unexpected argument "${positionals[1]}"\n  hint: see \`db-sync --help\`\n`);
    return ExitCode.Usage;
  }
  if (spec.takesCommand && childCommand.length === 0) {
    process.stderr.write(`db-sync: ${name} needs a command to run\n  hint: usage: db-sync ${name} [flags] -- <command> [args…]\n`);
    return ExitCode.Usage;
  }

  let config: Config;
  try {
    config = loadConfig(process.env, values, { needsReplica: spec.run !== undefined });
  } catch (error) {
    printError(error, undefined);
    return exitCodeFor(error);
  }

  if (!spec.run) {
    if (config.healthPort === 0) {
      process.stderr.write('db-sync: the health server is disabled (DB_SYNC_HEALTH_PORT=0); nothing to probe\n');
      return ExitCode.Usage;
    }
    return healthCommand(config, values.live === true, (line) => process.stdout.write(`${line}\n`));
  }

  const log = createLogger({ level: config.logLevel, scrub });
  const shutdown = new Shutdown();
  const signalListeners = new Set<(signal: NodeJS.Signals) => void>();
  const notify = (signal: NodeJS.Signals): void => {
    for (const listener of [...signalListeners]) listener(signal);
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    const stage = shutdown.request(signal);
    if (stage === 'graceful') log.info({ signal }, 'stop requested; finishing (send again to abort)');
    else log.warn({ signal }, 'second stop request; aborting now');
    notify(signal);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // SIGHUP often means "reload" to an app: forward it to exec's child, but do not stop for it. Every other
  // command stops for it as for SIGTERM: unhandled, it would kill the process without a final sync
  // (outside PID 1, e.g. under tini, or when the terminal closes).
  process.on('SIGHUP', spec.takesCommand ? notify : onSignal);

  const store = createStore(config);
  shutdown.onClose('store', () => store.close());
  // The lease record names its holder: this process, and the ECS task when the metadata endpoint says so.
  const origin: LeaseHolderInfo = {
    host: hostname(),
    toolVersion: VERSION,
    pid: process.pid,
    task: ecsTaskFromMetadataUri(process.env.ECS_CONTAINER_METADATA_URI_V4),
  };
  const ctx: CommandContext = {
    config,
    log: log.child({ command: name }),
    store,
    origin,
    shutdown,
    flags: {
      force: values.force === true,
      versionId: values['version-id'] as string | undefined,
      json: values.json === true,
      at: values.at as string | undefined,
      backup: values.backup as string | undefined,
      to: values.to as string | undefined,
    },
    print: (line) => process.stdout.write(`${line}\n`),
    progress: progressFor(process.stderr, values.quiet === true),
    scrub,
    childCommand,
    onSignal: (listener) => {
      signalListeners.add(listener);
      return () => signalListeners.delete(listener);
    },
  };
  log.debug({ env: ENV_VARS.filter((n) => process.env[n] !== undefined) }, 'configuration read');
  let code: number;
  try {
    code = await spec.run(ctx);
  } catch (error) {
    printError(error, log);
    code = shutdown.hard.aborted ? ExitCode.Aborted : exitCodeFor(error);
  }
  for (const failure of await shutdown.close()) log.warn({ err: failure.message }, 'cleanup failed');
  return code;
}

// The AWS SDK prints a seven-line notice to stderr on Node < 22 at the first request, in the middle of
// db-sync's JSON log lines. It concerns the SDK's future releases, not this run; the README says which
// Node to use. A user who wants the notice can set the variable to "false".
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

main(process.argv.slice(2)).then(
  // Exit once stdout has taken everything: a large `--json` answer written to a pipe is still queued when
  // main() returns, and process.exit() at once would cut it short (measured: `backups --json` with 5,000
  // versions ended after 219 KB). The empty write's callback runs after every earlier write is flushed.
  (code) => process.stdout.write('', () => process.exit(code)),
  (error: unknown) => {
    process.stderr.write(scrub(`db-sync: unexpected error: ${toError(error).stack ?? String(error)}\n`));
    process.exit(ExitCode.Failure);
  },
);
