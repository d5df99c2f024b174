//! Configuration: schema, `rc://` parsing, durations, errors with line and column.
