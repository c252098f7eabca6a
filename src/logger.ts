/**
 * The root pino logger: JSON lines on stdout (CloudWatch-friendly), one child logger per component.
 *
 * Credentials must never reach a log line. The AWS SDK never logs them itself (we give it no logger),
 * but a config object or an error from a credential provider might carry one, so every field that can
 * hold a secret is redacted by path, wherever it sits in a logged object.
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
    options.destination ?? destination({ fd: 1, sync: true }),
  );
}

/** A logger that drops everything, for library callers and tests that do not care. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
