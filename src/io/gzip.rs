//! One gzip member compressed as independent blocks, in parallel (what pigz does).
//!
//! Why: compressing the corrected series (hundreds of MB of noisy float32) at level 6 was a
//! whole stage of its own on one core, and it needed the whole series encoded in memory
//! first. Here each block (e.g. one volume) is deflated by a fresh compressor and ends with a
//! sync flush (an empty stored block: byte-aligned, not final), the last one with the final
//! block; the concatenation is one valid deflate stream, so the file is an ordinary
//! single-member .gz that gzip, zlib and nibabel read. Blocks do not share a dictionary, so
//! the bytes depend only on the block boundaries and the level — never on the thread count or
//! on which block finished first — and blocks can be produced and written one batch at a time.

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use std::io::{self, Write};

/// A block deflated on its own, with the CRC-32 and length of its uncompressed bytes.
pub struct Block {
    deflated: Vec<u8>,
    crc: Crc,
}

/// Deflate `data` (raw deflate, no header) as one block; `last` ends the stream.
pub fn deflate_block(data: &[u8], level: u32, last: bool) -> io::Result<Block> {
    let mut c = Compress::new(Compression::new(level), false);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out: Vec<u8> = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(1 << 16));
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(|e| io::Error::other(format!("deflate failed: {e}")))?;
        let all_in = c.total_in() as usize == data.len();
        // Done when the final block is out, or (sync flush) when all input is taken and the
        // compressor stopped with room to spare in the output (zlib's flush-complete rule).
        if (last && status == Status::StreamEnd) || (!last && all_in && out.len() < out.capacity())
        {
            break;
        }
    }
    let mut crc = Crc::new();
    crc.update(data);
    Ok(Block { deflated: out, crc })
}

/// Writes a gzip member block by block: [`GzipBlocks::push`] each block in order (the last
/// one deflated with `last`), then [`GzipBlocks::finish`].
pub struct GzipBlocks<'a> {
    w: &'a mut dyn Write,
    crc: Crc,
}

impl<'a> GzipBlocks<'a> {
    /// Start the member: the 10-byte gzip header (no name, no time stamp, OS unknown).
    pub fn new(w: &'a mut dyn Write) -> io::Result<Self> {
        w.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
        Ok(GzipBlocks { w, crc: Crc::new() })
    }

    pub fn push(&mut self, b: &Block) -> io::Result<()> {
        self.w.write_all(&b.deflated)?;
        self.crc.combine(&b.crc);
        Ok(())
    }

    /// The trailer: CRC-32 and length (mod 2³²) of everything pushed.
    pub fn finish(self) -> io::Result<()> {
        self.w.write_all(&self.crc.sum().to_le_bytes())?;
        self.w.write_all(&self.crc.amount().to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn blocks_make_one_member_that_a_standard_decoder_reads_back() {
        // noisy bytes and runs, in blocks of unequal size (one empty)
        let mut x = 12345u64;
        let data: Vec<u8> = (0..300_000)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if i % 7000 < 3000 {
                    0
                } else {
                    (x >> 56) as u8
                }
            })
            .collect();
        let cuts = [0, 1, 70_000, 70_000, 200_000, 300_000];
        let mut out = Vec::new();
        let mut g = GzipBlocks::new(&mut out).unwrap();
        for w in cuts.windows(2) {
            let last = w[1] == data.len();
            g.push(&deflate_block(&data[w[0]..w[1]], 6, last).unwrap())
                .unwrap();
        }
        g.finish().unwrap();
        // flate2's single-member decoder (checks the CRC and length) gives the bytes back
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        assert!(out.len() < data.len() * 7 / 10, "{} bytes", out.len());
    }
}
