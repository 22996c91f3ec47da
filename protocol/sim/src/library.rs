//! The server's library: small media files generated in memory from the seed.
//!
//! WAV audio (PCM), Y4M video and opaque bytes, from nothing to a few hundred KB: enough for
//! every packetizer path the server takes (audio chunks by duration, video by frame, bytes by
//! size, the empty file's single empty chunk), small enough that a hundred clients fetch them
//! many times in a minute of simulated time.

use bytes::{BufMut, Bytes, BytesMut};
use rand::Rng;
use rand::rngs::StdRng;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PCM WAV.
    Audio,
    /// Y4M.
    Video,
    /// Opaque bytes.
    Bytes,
}

/// One file of the library.
#[derive(Debug, Clone)]
pub struct File {
    /// Its path in the library.
    pub name: String,
    /// What it holds.
    pub kind: Kind,
    /// Its bytes.
    pub data: Bytes,
    /// BLAKE3 of `data`.
    pub digest: [u8; 32],
}

/// The library: files by index (a file's id) and name.
#[derive(Debug, Clone)]
pub struct Library {
    files: Vec<File>,
}

impl Library {
    /// The library of a run: a fixed set of names, contents drawn from `rng`.
    pub fn generate(rng: &mut StdRng) -> Self {
        let mut files = Vec::new();
        let mut add = |name: &str, kind, data: Bytes| {
            files.push(File {
                name: name.to_owned(),
                kind,
                digest: *blake3::hash(&data).as_bytes(),
                data,
            });
        };
        add("music/tone.wav", Kind::Audio, wav(rng, 16_000, 1, 4));
        add("music/stereo.wav", Kind::Audio, wav(rng, 8_000, 2, 6));
        add("video/clip.y4m", Kind::Video, y4m(rng, 32, 24, 25, 120));
        add("video/small.y4m", Kind::Video, y4m(rng, 16, 16, 10, 60));
        let len = rng.random_range(150_000..300_000);
        add("data/big.bin", Kind::Bytes, bytes(rng, len));
        let len = rng.random_range(1..40_000);
        add("data/small.bin", Kind::Bytes, bytes(rng, len));
        add("data/one.bin", Kind::Bytes, bytes(rng, 1));
        add("data/empty.bin", Kind::Bytes, Bytes::new());
        Self { files }
    }

    /// Every file.
    pub fn files(&self) -> &[File] {
        &self.files
    }

    /// File `id`.
    pub fn file(&self, id: usize) -> &File {
        &self.files[id]
    }

    /// The file at `path`, with its id.
    pub fn find(&self, path: &str) -> Option<(usize, &File)> {
        self.files.iter().enumerate().find(|(_, f)| f.name == path)
    }

    /// Ids of the files of `kind`.
    pub fn of_kind(&self, kind: Kind) -> Vec<usize> {
        (0..self.files.len())
            .filter(|&i| self.files[i].kind == kind)
            .collect()
    }
}

/// A 16-bit PCM WAV: a tone with noise, so lz4 finds something but not everything.
fn wav(rng: &mut StdRng, rate: u32, channels: u16, seconds: u32) -> Bytes {
    let frames = rate * seconds;
    let data_len = frames * u32::from(channels) * 2;
    let mut b = BytesMut::with_capacity(44 + data_len as usize);
    b.put_slice(b"RIFF");
    b.put_u32_le(36 + data_len);
    b.put_slice(b"WAVEfmt ");
    b.put_u32_le(16);
    b.put_u16_le(1);
    b.put_u16_le(channels);
    b.put_u32_le(rate);
    b.put_u32_le(rate * u32::from(channels) * 2);
    b.put_u16_le(channels * 2);
    b.put_u16_le(16);
    b.put_slice(b"data");
    b.put_u32_le(data_len);
    let step = rng.random_range(20..200);
    for i in 0..frames {
        let tone = ((i * step) % 2000) as i32 - 1000;
        for _ in 0..channels {
            let noise: i32 = rng.random_range(-8..8);
            b.put_i16_le((tone * 8 + noise) as i16);
        }
    }
    b.freeze()
}

/// A Y4M 4:2:0 clip of gradient frames.
fn y4m(rng: &mut StdRng, w: u32, h: u32, fps: u32, frames: u32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_slice(format!("YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n").as_bytes());
    let luma = (w * h) as usize;
    let chroma = ((w / 2) * (h / 2)) as usize;
    let shift: u8 = rng.random();
    for n in 0..frames {
        b.put_slice(b"FRAME\n");
        for i in 0..luma {
            b.put_u8((i as u32 + n * 3) as u8 ^ shift);
        }
        for _ in 0..2 * chroma {
            b.put_u8(128u8.wrapping_add(n as u8));
        }
    }
    b.freeze()
}

/// Bytes: runs of one value and stretches of noise.
fn bytes(rng: &mut StdRng, len: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(len);
    while b.len() < len {
        let run = rng.random_range(1..4096).min(len - b.len());
        if rng.random_bool(0.5) {
            b.put_bytes(rng.random(), run);
        } else {
            for _ in 0..run {
                b.put_u8(rng.random());
            }
        }
    }
    b.freeze()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use chunkcast_media::{Config, Packetizer};
    use chunkcast_protocol::StreamId;
    use chunkcast_protocol::media::MediaKind;

    use super::*;
    use crate::rng;

    #[test]
    fn every_file_opens_as_its_kind_and_packetizes_to_itself() {
        let lib = Library::generate(&mut rng::derive(3, "library"));
        for f in lib.files() {
            let mut src = Cursor::new(&f.data[..]);
            let mut p = Packetizer::open(
                Config::new(StreamId(1)),
                &mut src,
                f.data.len() as u64,
                &f.name,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", f.name));
            let want = match f.kind {
                Kind::Audio => MediaKind::Audio,
                Kind::Video => MediaKind::Video,
                Kind::Bytes => MediaKind::Bytes,
            };
            assert_eq!(p.codec().kind(), want, "{}", f.name);
            let mut chunks = Vec::new();
            p.push(f.data.clone(), &mut chunks).unwrap();
            p.finish(&mut chunks).unwrap();
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.payload.to_vec()).collect();
            assert_eq!(joined, f.data.to_vec(), "{}", f.name);
        }
    }
}
