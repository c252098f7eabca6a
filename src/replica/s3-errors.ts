/**
 * Map AWS SDK failures to {@link StorageError}s: the AWS error vocabulary stops here.
 *
 * The rules: throttling, 5xx and network trouble are retryable; credentials, permissions, a missing bucket
 * and malformed requests are not (retrying a 403 only delays the message the user needs). Each permanent
 * error carries a hint naming the fix.
 */
import { AbortedError, StorageError } from '../errors.js';

interface SdkLikeError {
  name?: string;
  code?: string;
  message?: string;
  $fault?: 'client' | 'server';
  $metadata?: { httpStatusCode?: number };
  $retryable?: { throttling?: boolean };
}

/** Error names (or Node error codes) that mean "try again later". */
const RETRYABLE_NAMES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'RequestThrottled',
  'RequestThrottledException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'InternalError',
  'ServiceUnavailable',
  'RequestTimeout',
  'RequestTimeoutException',
  'TimeoutError',
  'NetworkingError',
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

const CREDENTIAL_NAMES = new Set([
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'ExpiredTokenException',
  'InvalidToken',
  'TokenRefreshRequired',
  'CredentialsProviderError',
  'UnrecognizedClientException',
]);

/** Context for messages: which bucket and key the failed call was about. */
export interface S3ErrorContext {
  readonly bucket: string;
  readonly key?: string | undefined;
}

/** Short code of an SDK or Node error, for logs and metrics. */
export function errorCode(error: unknown): string {
  const e = (error ?? {}) as SdkLikeError;
  const status = e.$metadata?.httpStatusCode;
  if (e.name && e.name !== 'Error' && e.name !== 'S3ServiceException') return e.name;
  if (e.code) return e.code;
  if (status !== undefined) return `HTTP${status}`;
  return 'Unknown';
}

/** True when the SDK error means the object (or version, or bucket path) is absent. */
export function isNotFound(error: unknown): boolean {
  const e = (error ?? {}) as SdkLikeError;
  if (e.name === 'NoSuchBucket') return false;
  return (
    e.name === 'NoSuchKey' ||
    e.name === 'NotFound' ||
    e.name === 'NoSuchVersion' ||
    // HEAD/GET of a version that is a delete marker answers 405.
    (e.name === 'MethodNotAllowed' && e.$metadata?.httpStatusCode === 405) ||
    (e.$metadata?.httpStatusCode === 404 && e.name !== 'NoSuchBucket' && e.name !== 'NoSuchUpload')
  );
}

/**
 * Turn any error thrown by the SDK into a {@link StorageError} (or {@link AbortedError} for cancellation).
 * @param operation short lowercase verb phrase for the message, e.g. "upload s3://b/k".
 */
export function toStorageError(error: unknown, operation: string, context: S3ErrorContext): Error {
  const e = (error ?? {}) as SdkLikeError;
  if (e.name === 'AbortError') return new AbortedError(`${operation}: aborted`, error);
  const code = errorCode(error);
  const status = e.$metadata?.httpStatusCode;
  const detail = e.message && e.message !== code ? `${code}: ${e.message}` : code;
  const message = `${operation}: ${detail}`;
  const where = `s3://${context.bucket}${context.key ? `/${context.key}` : ''}`;

  if (code === 'NoSuchBucket') {
    return new StorageError(message, {
      retryable: false,
      code,
      hint: `bucket "${context.bucket}" does not exist; create it (with versioning on) or fix DB_S3_BUCKET`,
    });
  }
  if (CREDENTIAL_NAMES.has(code) || e.name === 'CredentialsProviderError') {
    return new StorageError(message, {
      retryable: false,
      code,
      hint:
        'the AWS credentials are missing, wrong or expired; check the task role, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY ' +
        'or AWS_PROFILE (db-sync uses the AWS SDK default credential chain)',
    });
  }
  if (code === 'AccessDenied' || code === 'Forbidden' || code === 'AllAccessDisabled' || status === 403) {
    return new StorageError(message, {
      retryable: false,
      code,
      hint: `access to ${where} was denied; grant the task role s3:GetObject, s3:PutObject, s3:ListBucket and s3:ListBucketVersions on it (see terraform/modules/iam-policy)`,
    });
  }
  if (code === 'PermanentRedirect' || code === 'AuthorizationHeaderMalformed' || status === 301) {
    return new StorageError(message, {
      retryable: false,
      code,
      hint: `bucket "${context.bucket}" is in another region; set DB_S3_REGION (or AWS_REGION) to the bucket's region`,
    });
  }
  if (code === 'InvalidBucketName') {
    return new StorageError(message, {
      retryable: false,
      code,
      hint: `"${context.bucket}" is not a valid bucket name; fix DB_S3_BUCKET`,
      kind: 'Usage',
    });
  }
  const throttled = e.$retryable?.throttling === true || status === 429 || status === 503;
  if (RETRYABLE_NAMES.has(code) || throttled || e.$fault === 'server' || (status !== undefined && status >= 500)) {
    return new StorageError(message, {
      retryable: true,
      code,
      hint:
        code === 'ENOTFOUND' || code === 'ECONNREFUSED'
          ? `cannot reach the S3 endpoint; check DB_S3_ENDPOINT / network access to ${where}`
          : code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'EPIPE'
            ? `the connection to ${where} broke mid-transfer; db-sync retries with backoff (if it keeps happening, check the network path to S3)`
            : 'the S3 service is unavailable or throttling; db-sync will retry with backoff',
    });
  }
  // Without an HTTP status the request never got an answer: a local network or socket problem.
  if (status === undefined && !e.$fault) {
    return new StorageError(message, {
      retryable: true,
      code,
      hint: `cannot reach the S3 endpoint; check DB_S3_ENDPOINT / network access to ${where}`,
    });
  }
  return new StorageError(message, {
    retryable: false,
    code,
    kind: 'Failure',
    hint: `S3 rejected the request for ${where}; see the error code above`,
  });
}
