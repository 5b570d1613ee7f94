import CRdKafka

/// A record to produce.
///
/// Either owned bytes (``init(topic:partition:key:value:headers:timestamp:)``), or a consumed
/// record forwarded (``init(forwarding:to:removingHeaders:addingHeaders:)``): its key, value and
/// headers go from librdkafka's consumer buffer to its producer without a copy into Swift, the
/// header edits applied on the way. Reading ``key``, ``value`` or ``headers`` of a forwarded
/// record copies them; setting any property turns it into an owned record. Equality and hashing
/// compare contents, whichever the storage.
public struct KafkaProducerMessage: Sendable, Hashable {
    public var topic: String
    /// An explicit partition; nil lets the partitioner choose from the key.
    public var partition: Int32?
    /// CreateTime in milliseconds since the epoch; nil means now.
    public var timestamp: Int64?
    private var storage: Storage

    private enum Storage: Sendable {
        case owned(key: [UInt8]?, value: [UInt8]?, headers: [KafkaHeader])
        case forwarded(Forwarded)
    }

    /// A consumed record's key, value and headers; headers named in `removing`, `adding` or
    /// `inline` are left out, then `adding` and `inline` are appended.
    struct Forwarded: Sendable {
        let input: KafkaMessage
        let removing: [String]
        let adding: [KafkaHeader]
        let inline: KafkaInlineHeader?

        func removes(_ key: String) -> Bool {
            removing.contains(key) || adding.contains { $0.key == key } || inline?.key == key
        }

        /// The headers this record adds.
        var added: [KafkaHeader] { inline.map { adding + [$0.header] } ?? adding }
    }

    public init(
        topic: String, partition: Int32? = nil, key: [UInt8]? = nil, value: [UInt8]?,
        headers: [KafkaHeader] = [], timestamp: Int64? = nil
    ) {
        self.topic = topic
        self.partition = partition
        self.timestamp = timestamp
        self.storage = .owned(key: key, value: value, headers: headers)
    }

    /// A message with UTF-8 key and value.
    public init(topic: String, key: String?, value: String?, headers: [KafkaHeader] = []) {
        self.init(topic: topic, key: key.map { Array($0.utf8) }, value: value.map { Array($0.utf8) }, headers: headers)
    }

    /// `input`'s key, value and headers, to `topic` (partition chosen from the key, timestamp now):
    /// the headers without any named in `removingHeaders`, in `addingHeaders` or by `inlineHeader`,
    /// then `addingHeaders`, then `inlineHeader`. A record from ``KafkaConsumer`` is passed to
    /// librdkafka from its consumer buffer, with no Swift copy of its bytes (`input` is kept alive
    /// until the record is queued); an `inlineHeader` makes no heap allocation either.
    public init(
        forwarding input: KafkaMessage, to topic: String, removingHeaders: [String] = [], addingHeaders: [KafkaHeader] = [],
        inlineHeader: KafkaInlineHeader? = nil
    ) {
        self.topic = topic
        self.partition = nil
        self.timestamp = nil
        self.storage = .forwarded(Forwarded(input: input, removing: removingHeaders, adding: addingHeaders, inline: inlineHeader))
    }

    /// The key (copied from the input for a forwarded record); nil for a null key.
    public var key: [UInt8]? {
        get {
            switch storage {
            case .owned(let key, _, _): return key
            case .forwarded(let f): return f.input.key
            }
        }
        set { storage = .owned(key: newValue, value: value, headers: headers) }
    }

    /// The value (copied from the input for a forwarded record); nil produces a tombstone.
    public var value: [UInt8]? {
        get {
            switch storage {
            case .owned(_, let value, _): return value
            case .forwarded(let f): return f.input.value
            }
        }
        set { storage = .owned(key: key, value: newValue, headers: headers) }
    }

    /// The headers (built from the input's for a forwarded record).
    public var headers: [KafkaHeader] {
        get {
            switch storage {
            case .owned(_, _, let headers): return headers
            case .forwarded(let f): return f.input.headers.filter { !f.removes($0.key) } + f.added
            }
        }
        set { storage = .owned(key: key, value: value, headers: newValue) }
    }

    /// The first header with this key, or nil.
    public func header(_ key: String) -> KafkaHeader? {
        switch storage {
        case .owned(_, _, let headers): return headers.first { $0.key == key }
        case .forwarded(let f):
            if let inline = f.inline, inline.key == key { return inline.header }
            if let added = f.adding.first(where: { $0.key == key }) { return added }
            return f.removing.contains(key) ? nil : f.input.header(key)
        }
    }

    /// True when the record is forwarded from a consumed one (no Swift copy of its bytes).
    public var isForwarded: Bool {
        if case .forwarded = storage { return true }
        return false
    }

    /// The key's and value's bytes plus the headers this record adds, without copying anything:
    /// what the record takes of the producer's queue (`queue.buffering.max.kbytes`), give or take
    /// a forwarded record's input headers.
    public var byteCount: Int {
        switch storage {
        case .owned(let key, let value, let headers):
            return (key?.count ?? 0) + (value?.count ?? 0) + headers.reduce(0) { $0 + $1.key.utf8.count + ($1.value?.count ?? 0) }
        case .forwarded(let f):
            return (f.input.keyCount ?? 0) + (f.input.valueCount ?? 0)
                + f.adding.reduce(0) { $0 + $1.key.utf8.count + ($1.value?.count ?? 0) }
                + (f.inline.map { $0.key.utf8.count + $0.count } ?? 0)
        }
    }

    /// For the producer: how to hand this record to librdkafka.
    var forwarded: Forwarded? {
        if case .forwarded(let f) = storage { return f }
        return nil
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.topic == b.topic && a.partition == b.partition && a.timestamp == b.timestamp && a.key == b.key && a.value == b.value
            && a.headers == b.headers
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(topic)
        hasher.combine(partition)
        hasher.combine(timestamp)
        hasher.combine(key)
        hasher.combine(value)
        hasher.combine(headers)
    }
}
