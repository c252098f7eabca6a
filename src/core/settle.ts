/**
 * Run two tasks at once and wait for both, even when one fails.
 *
 * `Promise.all` rejects as soon as one task fails while the other keeps running; callers here delete the
 * files those tasks read or write right after a failure, so they must know that nothing still uses them.
 * @returns both results, in order.
 * @throws the first task's error if it failed, else the second's.
 */
export async function bothSettled<A, B>(first: Promise<A>, second: Promise<B>): Promise<[A, B]> {
  const [a, b] = await Promise.allSettled([first, second]);
  if (a.status === 'rejected') throw a.reason;
  if (b.status === 'rejected') throw b.reason;
  return [a.value, b.value];
}
