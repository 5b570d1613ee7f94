"""fastavro (an independent Avro implementation, from PyPI) on the other side of the Swift codec.

    avro_interop.py write SCHEMA_FILE < values.jsonl   -> one hex line of Avro binary per value
    avro_interop.py read SCHEMA_FILE < data.hex        -> one JSON line per value

Values are JSON in the pipeline's mapping (Sources/Avro/AvroReader.swift): bytes and fixed as strings
of code points U+0000-U+00FF, decimals as exact decimal strings, dates and times as the integers Avro
holds, unions unwrapped. fastavro's conversion of date, time, timestamp and uuid logical types is
switched off so both sides exchange the plain values.
"""
import decimal
import io
import json
import sys

import fastavro
import fastavro.read
import fastavro.write

for name in list(fastavro.read.LOGICAL_READERS):
    if not name.endswith("decimal"):
        del fastavro.read.LOGICAL_READERS[name]
for name in list(fastavro.write.LOGICAL_WRITERS):
    if not name.endswith("decimal"):
        del fastavro.write.LOGICAL_WRITERS[name]


def named_types(schema, table, namespace=None):
    """Full name -> definition of every named type in the schema."""
    if isinstance(schema, list):
        for branch in schema:
            named_types(branch, table, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            name = schema["name"]
            ns = schema.get("namespace", namespace)
            full = name if "." in name or not ns else ns + "." + name
            table[full] = schema
            table[name] = schema
            ns = full.rsplit(".", 1)[0] if "." in full else None
            for field in schema.get("fields", []):
                named_types(field["type"], table, ns)
        elif kind == "array":
            named_types(schema["items"], table, namespace)
        elif kind == "map":
            named_types(schema["values"], table, namespace)
        elif isinstance(kind, (dict, list)):
            named_types(kind, table, namespace)


def resolve(schema, table):
    if isinstance(schema, str) and schema in table:
        return table[schema]
    if isinstance(schema, dict) and isinstance(schema.get("type"), (dict, list)) and "logicalType" not in schema:
        return resolve(schema["type"], table)
    return schema


def kind_of(schema):
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    t = schema["type"]
    if schema.get("logicalType") == "decimal":
        return "decimal"
    return t if isinstance(t, str) else kind_of(t)


def fits(value, schema, table):
    s = resolve(schema, table)
    k = kind_of(s)
    if k == "null":
        return value is None
    if k == "boolean":
        return isinstance(value, bool)
    if k in ("int", "long"):
        return isinstance(value, int) and not isinstance(value, bool)
    if k in ("float", "double"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if k in ("string", "bytes", "decimal"):
        return isinstance(value, str)
    if k == "enum":
        return isinstance(value, str) and value in s["symbols"]
    if k == "fixed":
        return isinstance(value, str) and len(value) == s["size"]
    if k == "array":
        return isinstance(value, list)
    if k in ("map", "record"):
        return isinstance(value, dict)
    return False


def to_python(value, schema, table):
    """Pipeline JSON -> what fastavro writes (bytes, Decimal); union branches picked as Swift does."""
    s = resolve(schema, table)
    k = kind_of(s)
    if k == "union":
        for branch in s:
            if fits(value, branch, table):
                return to_python(value, branch, table)
        raise ValueError("no branch for %r" % (value,))
    if k in ("bytes", "fixed"):
        return value.encode("latin-1")
    if k == "decimal":
        return decimal.Decimal(value)
    if k in ("float", "double"):
        return float(value)
    if k == "array":
        return [to_python(v, s["items"], table) for v in value]
    if k == "map":
        return {key: to_python(v, s["values"], table) for key, v in value.items()}
    if k == "record":
        return {f["name"]: to_python(value.get(f["name"]), f["type"], table) for f in s["fields"]}
    return value


def to_json(value):
    """What fastavro read -> pipeline JSON."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {key: to_json(v) for key, v in value.items()}
    return value


def main():
    mode, schema_file = sys.argv[1], sys.argv[2]
    with open(schema_file) as f:
        raw = json.load(f)
    table = {}
    named_types(raw, table)
    parsed = fastavro.parse_schema(raw)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        if mode == "write":
            out = io.BytesIO()
            fastavro.schemaless_writer(out, parsed, to_python(json.loads(line), raw, table))
            print(out.getvalue().hex())
        else:
            value = fastavro.schemaless_reader(io.BytesIO(bytes.fromhex(line)), parsed)
            print(json.dumps(to_json(value), sort_keys=True))


if __name__ == "__main__":
    main()
