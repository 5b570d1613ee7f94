/// FNV-1a, 64 bit: a hash that is the same in every process and on every machine (Swift's `Hasher`
/// is seeded per process), for what must survive a restart or be compared across runs — the
/// `hash()` expression function, distinct-value sets and record ids in the changelog, replay digests.
public enum FNV1a {
    public static func hash<Bytes: Sequence>(_ bytes: Bytes) -> UInt64 where Bytes.Element == UInt8 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return h
    }
}
