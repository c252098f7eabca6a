/**
 * What S3 requests cost a month at AWS S3 Standard's list prices (us-east-1, checked 2026-12): PUT, COPY,
 * POST and LIST requests $0.005 per 1,000; GET, HEAD and other reads $0.0004 per 1,000; DELETE free.
 * Requests the benchmark cannot classify (`OTHER`) are priced as PUTs, the dearer class, so the cost is
 * never understated. Storage and transfer are not included: only the requests a tool's cadence causes.
 */
import type { RequestClass } from './proxy.js';

/** Hours in AWS's billing month. */
export const HOURS_PER_MONTH = 730;

/** US dollars per request, by billing class. */
export const PRICE_PER_REQUEST: Readonly<Record<RequestClass, number>> = {
  PUT: 0.005 / 1000,
  LIST: 0.005 / 1000,
  OTHER: 0.005 / 1000,
  GET: 0.0004 / 1000,
  HEAD: 0.0004 / 1000,
  DELETE: 0,
};

/** US dollars a month for requests made at `perHour` (by class) around the clock. */
export function monthlyRequestCost(perHour: Readonly<Record<RequestClass, number>>): number {
  let dollars = 0;
  for (const [cls, n] of Object.entries(perHour) as Array<[RequestClass, number]>) dollars += n * HOURS_PER_MONTH * PRICE_PER_REQUEST[cls];
  return dollars;
}
