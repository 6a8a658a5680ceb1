/**
 * Bounds a Map kept in least-recently-used order (a key used again is deleted and set, so it goes
 * to the end): drops every expired entry, then the oldest down to 90% of maxKeys, so the full scan
 * runs at most once per maxKeys/10 new keys.
 */
export function evictLru<V extends { expiresAt: number }>(map: Map<string, V>, maxKeys: number, now: number): void {
  for (const [key, value] of map) {
    if (value.expiresAt <= now) map.delete(key)
  }
  const target = Math.max(1, Math.floor(maxKeys * 0.9))
  for (const key of map.keys()) {
    if (map.size <= target) break
    map.delete(key)
  }
}
