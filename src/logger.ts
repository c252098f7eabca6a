/**
 * The root pino logger: JSON lines on stdout (CloudWatch-friendly), one child logger per component.
 *
 * Credentials must never reach a log line. The AWS SDK never logs them itself (we give it no logger),
 * but a config object or an error from a credential provider might carry one, so every field that can
 * hold a secret is redacted by path, wherever it sits in a logged object. As a last line of defence, the
 * CLI also hands in the secret values it can see (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) and every line
 * is scrubbed of them by value, whatever path or message carried them.
 */
import { pino, destination, stdTimeFunctions, type Logger, type DestinationStream } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

/** Paths pino blanks out in every log line. */
export const REDACT_PATHS = [
  'accessKeyId',
  'secretAccessKey',
  'sessionToken',
  'credentials',
  'authorization',
  'Authorization',
  '*.accessKeyId',
  '*.secretAccessKey',
  '*.sessionToken',
  '*.credentials',
  '*.authorization',
  '*.Authorization',
  '*.headers.authorization',
  '*.headers["x-amz-security-token"]',
  'err.$response',
  'err.$metadata.extendedRequestId',
];

export interface LoggerOptions {
  readonly level: LogLevel;
  /** Where to write; stdout when absent. Tests pass a stream they can read. */
  readonly destination?: DestinationStream;
  /** Applied to every finished line before it is written (see {@link secretScrubber}). */
  readonly scrub?: ((text: string) => string) | undefined;
}

/** Secret values shorter than this are not scrubbed by value: they could match ordinary text. */
export const MIN_SCRUBBED_SECRET_LENGTH = 8;

/**
 * A function that replaces every occurrence of the given secret values in a text with `[redacted]`.
 * Values that are undefined or shorter than {@link MIN_SCRUBBED_SECRET_LENGTH} are ignored; with none
 * left it returns the text unchanged.
 */
export function secretScrubber(secrets: ReadonlyArray<string | undefined>): (text: string) => string {
  const raw = secrets.filter((v): v is string => v !== undefined && v.length >= MIN_SCRUBBED_SECRET_LENGTH);
  // Each value as is and as it appears inside a JSON string (a log line escapes quotes and backslashes).
  const values = [...new Set(raw.flatMap((v) => [v, JSON.stringify(v).slice(1, -1)]))];
  // Longest first, so a secret that contains another is replaced whole.
  values.sort((a, b) => b.length - a.length);
  if (values.length === 0) return (text) => text;
  return (text) => values.reduce((out, v) => (out.includes(v) ? out.split(v).join('[redacted]') : out), text);
}

/** Create the root logger. Only the CLI calls this; everything else receives a (child) logger. */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      name: 'db-sync',
      level: options.level,
      base: { pid: process.pid },
      timestamp: stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    scrubbed(options.destination ?? destination({ fd: 1, sync: true }), options.scrub),
  );
}

function scrubbed(out: DestinationStream, scrub: ((text: string) => string) | undefined): DestinationStream {
  if (!scrub) return out;
  return { write: (line: string) => out.write(scrub(line)) };
}

/** A logger that drops everything, for library callers and tests that do not care. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
