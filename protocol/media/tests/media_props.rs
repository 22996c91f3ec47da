//! Property tests: random WAV specs round-trip with whole frames per chunk; random MJPEG-like
//! byte soups and Y4M frame lines never break the byte-exact stream.

mod media_common;

use chunkcast_media::frames_to_us;
use chunkcast_protocol::{ChunkFlags, Codec};
use media_common::{
    Pieces, Rng, WavSpec, check_stream, config, feed, open, packetize, reassemble, wav,
};
use proptest::prelude::*;

fn spec() -> impl Strategy<Value = WavSpec> {
    (
        prop::sample::select(vec![8u16, 16, 24, 32]),
        1u16..=8,
        prop::sample::select(vec![
            1u32, 7, 8000, 11_025, 22_050, 44_100, 48_000, 96_000, 192_000, 12_345,
        ]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(bits, channels, rate, float, extensible)| WavSpec {
            float: float && bits == 32,
            extensible,
            ..WavSpec::pcm(channels, rate, bits)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_wavs_round_trip(
        spec in spec(),
        frames in 0usize..3000,
        before in any::<bool>(),
        after in any::<bool>(),
        chunk_size in 64usize..20_000,
        audio_ms in 1u32..100,
        piece in 1usize..10_000,
        seed in any::<u64>(),
    ) {
        let data = wav(&spec, frames, before, after, seed);
        let mut c = config();
        c.chunk_size = chunk_size;
        c.audio_chunk_us = audio_ms * 1000;
        let (p, chunks) = packetize(&data, "p.wav", c, Pieces::Random(piece), seed);
        prop_assert!(matches!(p.codec(), Codec::Audio(_)));
        let fb = spec.frame_bytes();
        let mut done = 0u64;
        for ch in chunks.iter().filter(|c| !c.has(ChunkFlags::INIT)) {
            prop_assert_eq!(ch.payload.len() % fb, 0);
            prop_assert!(!ch.payload.is_empty());
            prop_assert_eq!(ch.pts_us, frames_to_us(done, spec.rate));
            done += (ch.payload.len() / fb) as u64;
            prop_assert_eq!(ch.pts_us + u64::from(ch.duration_us), frames_to_us(done, spec.rate));
        }
        prop_assert_eq!(done, frames as u64);
        reassemble(&chunks, &data, seed);
    }

    #[test]
    fn jpeg_marker_soup_stays_byte_exact(
        parts in prop::collection::vec(
            prop::sample::select(vec![
                &[0xFF, 0xD8][..], &[0xFF, 0xD9], &[0xFF, 0xDA, 0, 4, 1, 2], &[0xFF, 0xE1, 0, 6, 0xFF, 0xD9, 0xFF, 0xD8],
                &[0xFF, 0x00], &[0xFF, 0xD0], &[0xFF, 0xFF], &[0x12, 0x34, 0x56], &[0xFF, 0xC0, 0, 11, 8, 0, 2, 0, 2, 1, 1, 0x11, 0],
                &[0xFF, 0xDB, 0, 3, 9], &[0xFF, 0x01],
            ]),
            0..200,
        ),
        piece in 1usize..64,
        chunk_size in 1usize..64,
    ) {
        // Start like an MJPEG stream so the scanner runs, then throw markers at it.
        let mut data = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 11, 8, 0, 2, 0, 2, 1, 1, 0x11, 0, 0xFF, 0xD9];
        data.extend(parts.concat());
        let mut c = config();
        c.chunk_size = chunk_size;
        if let Ok(mut p) = open(&data, "soup.mjpeg", c.clone()) {
            let chunks = feed(&mut p, &data, Pieces::Random(piece), &mut Rng::new(piece as u64)).unwrap();
            check_stream(&p, &chunks, &data, &c);
            // Units never straddle INIT bytes.
            let mut in_unit = false;
            for ch in &chunks {
                prop_assert!(!(in_unit && ch.has(ChunkFlags::INIT)));
                in_unit = !ch.has(ChunkFlags::INIT) && !ch.has(ChunkFlags::END_OF_UNIT);
            }
        }
    }
}
