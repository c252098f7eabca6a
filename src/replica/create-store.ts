/**
 * Pick the store for a configuration. The only module that knows every backend; the domain code sees
 * just the {@link ReplicaStore} interface.
 */
import type { Config } from '../config.js';
import { DirStore } from './dir-store.js';
import { S3Store } from './s3-store.js';
import type { ReplicaStore } from './store.js';

export function createStore(config: Config): ReplicaStore {
  if (config.replicaDir) return new DirStore(config.replicaDir);
  if (!config.bucket) throw new Error('createStore: no bucket configured (loadConfig should have refused this)');
  return new S3Store({
    bucket: config.bucket,
    endpoint: config.endpoint,
    region: config.region,
    forcePathStyle: config.forcePathStyle,
    downloadConcurrency: config.downloadConcurrency,
    sse: config.sse ? { mode: config.sse, kmsKeyId: config.sseKmsKeyId } : undefined,
  });
}
