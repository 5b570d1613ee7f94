// JSON Schema (draft 2020-12) validation — see JSONSchema.swift.
