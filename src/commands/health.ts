/**
 * `db-sync health`: probe a running daemon's health server and exit 0 (ready) or 8 (not ready or not
 * reachable). ECS container health checks run a command, and slim images have no curl.
 */
import { request } from 'node:http';
import type { Config } from '../config.js';
import { ExitCode } from '../errors.js';

export const HEALTH_PROBE_TIMEOUT_MS = 3_000;

/** GET a path on the health server. Resolves with the status code, or an error message. */
export function probe(host: string, port: number, path: string): Promise<{ status: number; body: string } | { error: string }> {
  return new Promise((resolve) => {
    const req = request({ host, port, path, method: 'GET', timeout: HEALTH_PROBE_TIMEOUT_MS }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${HEALTH_PROBE_TIMEOUT_MS} ms`)));
    req.on('error', (error) => resolve({ error: error.message }));
    req.end();
  });
}

export async function healthCommand(config: Config, live: boolean, print: (line: string) => void): Promise<number> {
  // A server bound to every address is reachable on loopback.
  const host = config.healthHost === '0.0.0.0' || config.healthHost === '::' ? '127.0.0.1' : config.healthHost;
  const path = live ? '/healthz' : '/readyz';
  const result = await probe(host, config.healthPort, path);
  if ('error' in result) {
    print(`unhealthy: cannot reach http://${host}:${config.healthPort}${path}: ${result.error}`);
    return ExitCode.Unhealthy;
  }
  print(`${result.status === 200 ? 'healthy' : 'unhealthy'}: ${path} answered ${result.status} ${result.body.trim()}`);
  return result.status === 200 ? ExitCode.Ok : ExitCode.Unhealthy;
}
