//! The budget of a load (docs/FORMAT.md, section 4): the tensors of a file decode to at most
//! `DecodeLimits::element_budget(file size)` elements, checked before anything is decoded. A
//! counting global allocator measures the peak a parse-and-decode reaches at the edge of the
//! budget and past it.

use nnzip_core::NnzError;
use nnzip_core::format::decode::HEADER_BYTES;
use nnzip_core::format::{DecodeLimits, MAGIC, NnzReader};
use nnzip_core::metadata::Metadata;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes live now and the most live since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated at the peak of `f`, over what was live before it.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - before)
}

/// Gap width of the crafted tensor: the widest the format allows, as in the attack.
const GAP_BITS: u8 = 16;

/// A shared-sparse payload of `m` zero entries, each skipping `2^16 − 1` zeros (filler
/// entries), with one-symbol code tables: two bits an entry for 65,536 elements.
fn filler_payload(m: u64) -> Vec<u8> {
    let mut p = vec![1u8, GAP_BITS]; // index bits, gap bits
    p.extend_from_slice(&1u32.to_le_bytes()); // codebook of one value, 0.0
    p.extend_from_slice(&0f32.to_le_bytes());
    p.extend_from_slice(&m.to_le_bytes());
    p.extend_from_slice(&1u32.to_le_bytes()); // index table: symbol 0, 1 bit
    p.push(1);
    let alphabet = 1usize << GAP_BITS; // gap table: only the largest gap, 1 bit
    p.extend_from_slice(&(alphabet as u32).to_le_bytes());
    p.extend(std::iter::repeat_n(0u8, alphabet - 1));
    p.push(1);
    let stream_bytes = m.div_ceil(8);
    for _ in 0..2 {
        p.extend_from_slice(&stream_bytes.to_le_bytes());
        p.extend(std::iter::repeat_n(0u8, stream_bytes as usize));
    }
    p
}

/// A version-1 file holding one shared-sparse tensor of `n` elements with `payload`, assembled
/// byte by byte (the encoder refuses to write a file over the budget).
fn file_with_tensor(n: u64, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    let json = serde_json::to_vec(&Metadata::default()).unwrap();
    body.extend_from_slice(&(json.len() as u32).to_le_bytes());
    body.extend_from_slice(&json);
    body.push(0); // graph stored, empty
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.push(b'w');
    body.push(3); // shared-sparse
    body.push(1); // rank
    body.extend_from_slice(&n.to_le_bytes());
    body.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    body.extend_from_slice(payload);
    let mut file = MAGIC.to_vec();
    file.extend_from_slice(&1u16.to_le_bytes());
    file.extend_from_slice(&0u16.to_le_bytes());
    file.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    file.extend_from_slice(&(body.len() as u64).to_le_bytes());
    assert_eq!(file.len(), HEADER_BYTES);
    file.extend_from_slice(&body);
    file
}

/// The same file with `n` changed: the size (and so the budget) stays, only the declared count.
fn with_elements(n: u64, m: u64) -> Vec<u8> {
    file_with_tensor(n, &filler_payload(m))
}

fn parse_and_decode(bytes: &[u8]) -> Result<usize, NnzError> {
    let reader = NnzReader::parse(bytes)?;
    let mut decoded = 0;
    for t in reader.tensors() {
        decoded += t.decode()?.len();
    }
    Ok(decoded)
}

/// One test: the allocation counters are global to the process.
#[test]
fn a_load_allocates_no_more_than_the_file_size_justifies() {
    let limits = DecodeLimits::default();
    // The file is about 66 KB, so its budget is 256 · 66 K ≈ 257 · 65,536 elements: 257 filler
    // entries of 65,536 positions each reach it, and the trailing zeros the rest.
    let m = 257u64;
    let file_bytes = with_elements(1, m).len() as u64;
    let budget = limits.element_budget(file_bytes);
    assert!(
        budget >= m << GAP_BITS && budget <= (m + 1) << GAP_BITS,
        "the crafted file must reach the edge of its budget: {budget} for {file_bytes} bytes"
    );

    // At the edge: decodes, and the peak is the decoded f32 plus the file's size and change.
    let at_edge = with_elements(budget, m);
    let (decoded, peak) = peak_of(|| parse_and_decode(&at_edge));
    assert_eq!(decoded.unwrap(), budget as usize);
    let bound = 4 * budget as usize + at_edge.len() + (1 << 20);
    assert!(peak <= bound, "peak {peak} bytes over the bound {bound}");
    assert!(
        peak >= 4 * budget as usize,
        "the decoded tensor was not measured"
    );

    // Past it by one element: refused before anything large is allocated.
    let past = with_elements(budget + 1, m);
    assert_eq!(past.len(), at_edge.len());
    let (refused, peak) = peak_of(|| parse_and_decode(&past));
    let err = refused.unwrap_err();
    assert!(matches!(err, NnzError::LimitExceeded(_)), "{err}");
    assert!(
        err.to_string().contains("more than a") && err.to_string().contains("-byte file"),
        "{err}"
    );
    assert!(peak < 1 << 20, "a refused file allocated {peak} bytes");

    // The attack of issue 21: 4,096 fillers declare 2^28 elements (1 GiB) in about 67 KB.
    let attack = with_elements(1 << 28, 1 << 12);
    assert!(attack.len() < 70_000);
    let (refused, peak) = peak_of(|| parse_and_decode(&attack));
    assert!(matches!(refused, Err(NnzError::LimitExceeded(_))));
    assert!(peak < 1 << 20, "the attack allocated {peak} bytes");
}

/// A file with room in its per-tensor limits but over the file-size budget is refused by the
/// budget alone, and a looser budget (a reader's setting) lets the same file through.
#[test]
fn the_budget_is_a_setting_of_the_reader() {
    let m = 1u64 << 10;
    let file = with_elements(m << GAP_BITS, m);
    assert!(matches!(
        NnzReader::parse(&file),
        Err(NnzError::LimitExceeded(_))
    ));
    let loose = DecodeLimits {
        max_elements_per_file_byte: 1 << 12,
        ..DecodeLimits::default()
    };
    assert!(NnzReader::parse_with_limits(&file, loose).is_ok());
}
