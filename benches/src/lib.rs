//! Benchmarks for chunkcast.
//!
//! The criterion benches live in `benches/`: `wire` measures the wire layer without sockets
//! (`Decoder::decode` with its CRC32C, `encode`/`encode_chunk_head`, and per-chunk lz4 via
//! `Compressor::apply` and `compress::decompress`) for 1 KiB to 1 MiB chunk payloads, reported
//! as bytes throughput. Run them with `cargo bench -p chunkcast-benches --bench wire`.
