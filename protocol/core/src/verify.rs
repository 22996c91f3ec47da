//! Verified streaming: the BLAKE3 tree of a file, so that every piece of it can be checked
//! against the file's one digest as it arrives, from any group-aligned offset (Bao's design,
//! as iroh-blobs uses it, built on blake3's own `hazmat` API).
//!
//! The file is cut into groups of [`GROUP_LEN`] bytes (16 BLAKE3 chunks; the last group may be
//! shorter). BLAKE3 is itself a binary tree over 1 KiB chunks in which a subtree that starts on
//! a group boundary and is a power of two groups long has one chaining value (CV); the tree
//! above the groups is therefore part of BLAKE3's own tree and its root is `blake3::hash` of
//! the file: the digest the protocol always had.
//!
//! - [`Outboard`]: the tree's parent nodes (each the left and right child CV, 64 bytes), in
//!   pre-order, as the server computes once per file and caches beside its digest: 64 bytes
//!   per 16 KiB group, 1/256 of the file.
//! - [`Outboard::proof`]: the parent nodes a receiver needs before the groups that start in a
//!   byte range, in the order it needs them (each node is sent once per stream).
//! - [`Verifier`]: the receiver's side: bytes in (in file order) and parent nodes in, only
//!   verified bytes out; the first group that does not match fails with its offset.
//!
//! Why 16 KiB groups: the outboard a server keeps is 1/256 of the file (4 MiB per GiB, small
//! enough to keep in memory beside the digest), the proof on the wire is 0.4 % of the bytes,
//! and a group is hashed with all of BLAKE3's SIMD lanes (16 chunks at once with AVX-512), so
//! verifying costs the same single hashing pass as the whole-file digest did. Smaller groups
//! double the outboard per halving; larger ones hold more unverified bytes back.

use std::collections::VecDeque;
use std::io::Read;

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};
use bytes::Bytes;

use crate::wire::{Caps, Resume};

/// Bytes per group, the unit of verification: 16 BLAKE3 chunks.
pub const GROUP_LEN: u64 = 16 * 1024;
/// Bytes of one parent node: its left child's CV, then its right child's.
pub const NODE_LEN: usize = 64;
/// Nodes one `PROOF` frame carries at most: a chunk of 1 MiB (the largest payload) needs 64
/// groups' nodes and a path of at most 48 more; a sender splits a longer list over several
/// frames. It bounds what one frame makes a receiver hold.
pub const MAX_PROOF_NODES: usize = 1024;
/// Parent nodes a receiver holds before it needs them at most: a server sends them just ahead
/// of the chunks they prove, so more means a hostile or broken peer.
pub const MAX_PENDING_NODES: usize = 64 * 1024;

/// Why verified bytes or a proof were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The group starting at `offset` does not hash to what the tree says: its bytes were
    /// altered (or the tree nodes that led to it were).
    #[error("bytes at offset {offset} do not match the file's BLAKE3 tree")]
    Data {
        /// The group's first byte in the file.
        offset: u64,
    },
    /// A tree node sent to prove the group at `offset` does not match its parent: the proof
    /// was altered.
    #[error("tree node before offset {offset} does not match the file's BLAKE3 tree")]
    Proof {
        /// The first byte of the group the node was needed for.
        offset: u64,
    },
    /// The bytes already on disk (a resume) do not match the tree at `offset`.
    #[error("the bytes already on disk differ from the server's file in {offset}..{end}")]
    Prefix {
        /// First byte of the subtree that differs.
        offset: u64,
        /// End of that subtree.
        end: u64,
    },
    /// Bytes past the file's length, or a proof for a stream that needs no more.
    #[error("{0}")]
    Excess(&'static str),
    /// The stream ended before every byte up to the file's length was verified.
    #[error("verified {verified} of {len} bytes")]
    Incomplete {
        /// Bytes verified (from the stream's start offset).
        verified: u64,
        /// The file's length.
        len: u64,
    },
    /// A verified stream must start on a group boundary.
    #[error("offset {0} is not a multiple of the group size {GROUP_LEN}")]
    Misaligned(u64),
    /// A node list whose length is not a multiple of [`NODE_LEN`].
    #[error("a proof of {0} bytes is not whole tree nodes")]
    BadProofLength(usize),
    /// More tree nodes arrived ahead of the bytes than [`MAX_PENDING_NODES`].
    #[error("too many tree nodes ahead of the bytes they prove")]
    TooMuchProof,
    /// Reading the bytes already on disk failed.
    #[error("reading the bytes on disk: {0}")]
    Io(String),
}

/// Where a file stream opened with `resume` on a connection with `caps` is verified from
/// (`docs/PROTOCOL.md` section 14), or `None` if it is sent as in version 1: with
/// [`Caps::VERIFIED`], from the start or from a byte offset on a group boundary; never a seq
/// resume, whose first byte the server only learns as it cuts the file. Both sides decide by
/// this one rule.
pub fn verified_start(caps: Caps, resume: Resume) -> Option<u64> {
    if !caps.contains(Caps::VERIFIED) {
        return None;
    }
    match resume {
        Resume::Start => Some(0),
        Resume::Offset(x) if x % GROUP_LEN == 0 => Some(x),
        Resume::Offset(_) | Resume::Seq(_) => None,
    }
}

/// Groups in a file of `len` bytes (an empty file is one empty group).
pub fn group_count(len: u64) -> u64 {
    len.div_ceil(GROUP_LEN).max(1)
}

/// The CV of the subtree of `data`, which starts at byte `offset` of a file longer than one
/// group (so that it is not the root).
fn subtree_cv(offset: u64, data: &[u8]) -> ChainingValue {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(data);
    h.finalize_non_root()
}

fn merge(left: &ChainingValue, right: &ChainingValue, root: bool) -> [u8; 32] {
    if root {
        *merge_subtrees_root(left, right, Mode::Hash).as_bytes()
    } else {
        merge_subtrees_non_root(left, right, Mode::Hash)
    }
}

fn split_node(node: &[u8; NODE_LEN]) -> (ChainingValue, ChainingValue) {
    let mut l = [0; 32];
    let mut r = [0; 32];
    l.copy_from_slice(&node[..32]);
    r.copy_from_slice(&node[32..]);
    (l, r)
}

/// A file's BLAKE3 tree above its groups: the root (the file's digest) and every parent
/// node in pre-order.
#[derive(Clone, PartialEq, Eq)]
pub struct Outboard {
    len: u64,
    root: [u8; 32],
    nodes: Vec<[u8; NODE_LEN]>,
}

impl std::fmt::Debug for Outboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outboard")
            .field("len", &self.len)
            .field("root", &blake3::Hash::from(self.root))
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl Outboard {
    /// The tree of the `len` bytes `src` yields, in one pass over them.
    pub fn from_reader(mut src: impl Read, len: u64) -> std::io::Result<Self> {
        let groups = group_count(len);
        if len <= GROUP_LEN {
            let mut data = Vec::with_capacity(len as usize);
            src.take(len).read_to_end(&mut data)?;
            if data.len() as u64 != len {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            return Ok(Self {
                len,
                root: *blake3::hash(&data).as_bytes(),
                nodes: Vec::new(),
            });
        }
        let mut cvs = Vec::with_capacity(groups as usize);
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        while offset < len {
            let want = (len - offset).min(buf.len() as u64) as usize;
            src.read_exact(&mut buf[..want])?;
            for (i, group) in buf[..want].chunks(GROUP_LEN as usize).enumerate() {
                cvs.push(subtree_cv(offset + i as u64 * GROUP_LEN, group));
            }
            offset += want as u64;
        }
        Ok(Self::from_group_cvs(len, &cvs))
    }

    /// The tree of `data`.
    pub fn from_bytes(data: &[u8]) -> Self {
        // Reading from a slice cannot fail, and its length is right by construction.
        Self::from_reader(data, data.len() as u64).unwrap_or_else(|_| unreachable!())
    }

    /// The tree above `cvs`, the CVs of a file of `len` (> one group) bytes' groups.
    fn from_group_cvs(len: u64, cvs: &[ChainingValue]) -> Self {
        let mut nodes = Vec::with_capacity(cvs.len().saturating_sub(1));
        let root = Self::build(cvs, len, true, &mut nodes);
        Self { len, root, nodes }
    }

    /// Appends the subtree's parents in pre-order and returns its CV (root: its hash).
    fn build(
        cvs: &[ChainingValue],
        len: u64,
        root: bool,
        out: &mut Vec<[u8; NODE_LEN]>,
    ) -> [u8; 32] {
        if cvs.len() == 1 {
            return cvs[0];
        }
        let split = left_subtree_len(len);
        let left_groups = (split / GROUP_LEN) as usize;
        let at = out.len();
        out.push([0; NODE_LEN]);
        let l = Self::build(&cvs[..left_groups], split, false, out);
        let r = Self::build(&cvs[left_groups..], len - split, false, out);
        out[at][..32].copy_from_slice(&l);
        out[at][32..].copy_from_slice(&r);
        merge(&l, &r, root)
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The root: BLAKE3 of the whole file.
    pub fn root(&self) -> [u8; 32] {
        self.root
    }

    /// Bytes the tree takes (its parent nodes).
    pub fn size(&self) -> usize {
        self.nodes.len() * NODE_LEN
    }

    /// The parent nodes, concatenated, that a receiver of a stream starting at byte `start`
    /// (a multiple of [`GROUP_LEN`]) needs before the groups whose first byte lies in
    /// `from..to`, in the order it needs them. Sent with the chunk covering `from..to`, every
    /// node of the stream goes out exactly once.
    pub fn proof(&self, start: u64, from: u64, to: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let groups = group_count(self.len);
        let start_group = start / GROUP_LEN;
        let first = from.div_ceil(GROUP_LEN).max(start_group);
        let end = to.div_ceil(GROUP_LEN).min(groups);
        for g in first..end {
            self.nodes_before(start_group, g, &mut out);
        }
        out
    }

    /// The nodes that precede group `g` in the pre-order walk of the stream starting at group
    /// `start`: those on the path to `g` whose first group within the stream is `g`.
    fn nodes_before(&self, start: u64, g: u64, out: &mut Vec<u8>) {
        let (mut first, mut groups, mut len, mut at) = (0u64, group_count(self.len), self.len, 0);
        while groups > 1 {
            if first.max(start) == g {
                out.extend_from_slice(&self.nodes[at]);
            }
            let split = left_subtree_len(len);
            let left = split / GROUP_LEN;
            if g < first + left {
                at += 1;
                groups = left;
                len = split;
            } else {
                at += left as usize;
                first += left;
                groups -= left;
                len -= split;
            }
        }
    }
}

/// A subtree the verifier expects: its CV (the root's hash for the whole tree) and its place.
#[derive(Debug, Clone, Copy)]
struct Subtree {
    cv: [u8; 32],
    start: u64,
    len: u64,
    root: bool,
}

/// A group whose bytes have all arrived and been hashed, waiting for the nodes that prove it.
#[derive(Debug)]
struct Hashed {
    offset: u64,
    cv: [u8; 32],
    pieces: Vec<Bytes>,
}

/// The receiver's side of a verified stream: bytes in file order in, tree nodes in, verified
/// bytes out.
///
/// Each byte is hashed once, as it arrives; a group's bytes come out of
/// [`Verifier::poll_verified`] only once the group matched the tree, so that a writer that
/// takes only those never stores an unverified byte. Bytes are held as the `Bytes` they came
/// in (no copy): at most the group being filled and the groups waiting for their nodes.
#[derive(Debug)]
pub struct Verifier {
    len: u64,
    start: u64,
    /// Absolute offset of the next byte to push.
    next: u64,
    /// The group being filled.
    hasher: blake3::Hasher,
    pieces: Vec<Bytes>,
    /// Groups hashed, waiting for nodes.
    hashed: VecDeque<Hashed>,
    /// Subtrees still to verify, the next on top.
    stack: Vec<Subtree>,
    nodes: VecDeque<[u8; NODE_LEN]>,
    /// Verified bytes not yet taken.
    verified: VecDeque<Bytes>,
    /// Offset up to which bytes are verified.
    verified_to: u64,
    /// Subtrees wholly before `start`, proved by the nodes: what the bytes on disk must hash to.
    prefix: Vec<Subtree>,
}

impl Verifier {
    /// A verifier for the file of `len` bytes whose BLAKE3 is `root`, streamed from byte
    /// `start` (a multiple of [`GROUP_LEN`], below `len` unless the file is empty).
    pub fn new(root: [u8; 32], len: u64, start: u64) -> Result<Self, VerifyError> {
        if start % GROUP_LEN != 0 || (start >= len && len > 0) {
            return Err(VerifyError::Misaligned(start));
        }
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(start);
        Ok(Self {
            len,
            start,
            next: start,
            hasher,
            pieces: Vec::new(),
            hashed: VecDeque::new(),
            stack: vec![Subtree {
                cv: root,
                start: 0,
                len,
                root: true,
            }],
            nodes: VecDeque::new(),
            verified: VecDeque::new(),
            verified_to: start,
            prefix: Vec::new(),
        })
    }

    /// The stream's first byte.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Bytes verified so far, from the file's start (the bytes on disk before `start`
    /// included, which [`Verifier::check_prefix`] checks).
    pub fn verified_to(&self) -> u64 {
        self.verified_to
    }

    /// Takes tree nodes (a `PROOF` frame's), and verifies what they make verifiable.
    pub fn add_nodes(&mut self, nodes: &[u8]) -> Result<(), VerifyError> {
        if nodes.len() % NODE_LEN != 0 {
            return Err(VerifyError::BadProofLength(nodes.len()));
        }
        if self.nodes.len() + nodes.len() / NODE_LEN > MAX_PENDING_NODES {
            return Err(VerifyError::TooMuchProof);
        }
        for n in nodes.chunks_exact(NODE_LEN) {
            let mut node = [0; NODE_LEN];
            node.copy_from_slice(n);
            self.nodes.push_back(node);
        }
        self.advance()
    }

    /// Takes the next bytes of the file (in order, from `start`), hashing them as they come.
    pub fn push(&mut self, mut data: Bytes) -> Result<(), VerifyError> {
        if data.len() as u64 > self.len - self.next {
            return Err(VerifyError::Excess("bytes past the end of the file"));
        }
        while !data.is_empty() {
            let group_end = (self.next / GROUP_LEN + 1) * GROUP_LEN;
            let take = (group_end - self.next).min(data.len() as u64) as usize;
            let piece = data.split_to(take);
            self.hasher.update(&piece);
            self.next += take as u64;
            self.pieces.push(piece);
            if self.next == group_end || self.next == self.len {
                self.close_group();
            }
        }
        self.advance()
    }

    /// Ends the group being filled.
    fn close_group(&mut self) {
        let offset = (self.next - 1) / GROUP_LEN * GROUP_LEN;
        let cv = if self.len <= GROUP_LEN {
            *self.hasher.finalize().as_bytes()
        } else {
            self.hasher.finalize_non_root()
        };
        self.hasher = blake3::Hasher::new();
        if self.next < self.len {
            self.hasher.set_input_offset(self.next);
        }
        self.hashed.push_back(Hashed {
            offset,
            cv,
            pieces: std::mem::take(&mut self.pieces),
        });
    }

    /// Verifies the hashed groups in order, as far as the nodes received allow.
    fn advance(&mut self) -> Result<(), VerifyError> {
        while let Some(group) = self.hashed.front() {
            let offset = group.offset;
            loop {
                let Some(top) = self.stack.last().copied() else {
                    return Err(VerifyError::Excess("bytes past the end of the tree"));
                };
                if top.len <= GROUP_LEN {
                    if top.start != offset || top.cv != group.cv {
                        return Err(VerifyError::Data { offset });
                    }
                    self.stack.pop();
                    break;
                }
                let Some(node) = self.nodes.pop_front() else {
                    return Ok(()); // waits for the nodes
                };
                let (l, r) = split_node(&node);
                if merge(&l, &r, top.root) != top.cv {
                    return Err(VerifyError::Proof { offset });
                }
                self.stack.pop();
                let split = left_subtree_len(top.len);
                let right = Subtree {
                    cv: r,
                    start: top.start + split,
                    len: top.len - split,
                    root: false,
                };
                let left = Subtree {
                    cv: l,
                    start: top.start,
                    len: split,
                    root: false,
                };
                self.stack.push(right);
                if left.start + left.len > self.start {
                    self.stack.push(left);
                } else {
                    self.prefix.push(left);
                }
            }
            if let Some(group) = self.hashed.pop_front() {
                self.verified_to =
                    group.offset + group.pieces.iter().map(|p| p.len() as u64).sum::<u64>();
                self.verified.extend(group.pieces);
            }
        }
        Ok(())
    }

    /// The next verified bytes, in file order.
    pub fn poll_verified(&mut self) -> Option<Bytes> {
        self.verified.pop_front()
    }

    /// Whether bytes are hashed and wait for tree nodes that have not arrived.
    pub fn needs_nodes(&self) -> bool {
        !self.hashed.is_empty()
    }

    /// Checks that every byte up to the file's length was pushed and verified (an empty
    /// file's one empty group included).
    pub fn finish(&mut self) -> Result<(), VerifyError> {
        if self.len == 0 && self.hashed.is_empty() && !self.stack.is_empty() {
            self.close_group_empty();
            self.advance()?;
        }
        if self.verified_to != self.len || !self.hashed.is_empty() {
            return Err(VerifyError::Incomplete {
                verified: self.verified_to - self.start,
                len: self.len,
            });
        }
        if !self.nodes.is_empty() {
            return Err(VerifyError::Excess("tree nodes left over at the end"));
        }
        Ok(())
    }

    fn close_group_empty(&mut self) {
        self.hashed.push_back(Hashed {
            offset: 0,
            cv: *blake3::hash(b"").as_bytes(),
            pieces: Vec::new(),
        });
    }

    /// Checks the file's first `start` bytes (those on disk when a download resumed) against
    /// the subtrees the nodes proved, reading them from `src` in one pass. Call once the
    /// stream's first group is verified (after [`Verifier::finish`]).
    pub fn check_prefix(&self, mut src: impl Read) -> Result<(), VerifyError> {
        let mut at = 0;
        let mut buf = vec![0u8; 1 << 20];
        for t in &self.prefix {
            debug_assert_eq!(t.start, at);
            // Streamed: a subtree may be half the file.
            let mut h = blake3::Hasher::new();
            h.set_input_offset(t.start);
            let mut left = t.len;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                src.read_exact(&mut buf[..n])
                    .map_err(|e| VerifyError::Io(e.to_string()))?;
                h.update(&buf[..n]);
                left -= n as u64;
            }
            if h.finalize_non_root() != t.cv {
                return Err(VerifyError::Prefix {
                    offset: t.start,
                    end: t.start + t.len,
                });
            }
            at += t.len;
        }
        if at != self.start {
            return Err(VerifyError::Incomplete {
                verified: 0,
                len: self.len,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
