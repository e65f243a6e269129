//! The GGUF reader: parses and validates a whole header, then hands out zero-copy tensor views.
//!
//! It owns the file's bytes (a read-only memory map, or an owned buffer for tests and fuzzing) and
//! the parsed header. Every count, length, type, shape and offset is checked before use, so no byte
//! string can make it panic, loop for long, allocate beyond the file's size, or read out of bounds.
//! It must not interpret metadata (model configuration lives elsewhere) or touch tensor contents.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use memmap2::Mmap;

use super::cursor::Cursor;
use super::error::{FormatError, GgufError};
use super::value::{MetadataArray, MetadataValue, ValueType};
use super::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH};
use crate::dtype::TensorType;
use crate::tensor::{TensorView, MAX_DIMS};

/// One tensor's header entry, validated: its bytes lie inside the file, aligned, overlapping no
/// other tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: TensorType,
    /// ggml order: `dims[0]` is the row length. One to four entries, all non-zero.
    pub dims: Vec<u64>,
    /// Absolute byte offset of the data in the file (the header stores it relative to
    /// [`GgufFile::data_offset`]).
    pub offset: u64,
    pub n_bytes: u64,
}

/// Advice about a byte range of a mapped file ([`GgufFile::advise`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageAdvice {
    /// Read these pages ahead (`MADV_WILLNEED`).
    WillNeed,
    /// Drop these pages from this process; they are re-read from the file if touched
    /// (`MADV_DONTNEED`).
    DontNeed,
}

/// Where the bytes live. Owned bytes are kept in `u64` words so that tensor data aligned within
/// the file is aligned in memory too (a `Vec<u8>` promises only 1-byte alignment).
enum Storage {
    Mapped(Mmap),
    Owned { words: Vec<u64>, len: usize },
}

impl Storage {
    /// The bytes copied once into an 8-byte-aligned buffer, so typed tensor views work as on a map.
    fn aligned_copy(bytes: Vec<u8>) -> Storage {
        let len = bytes.len();
        let mut words = vec![0u64; len.div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len].copy_from_slice(&bytes);
        Storage::Owned { words, len }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            Storage::Owned { words, len } => &bytemuck::cast_slice(words)[..*len],
        }
    }
}

/// The parsed header, independent of where the bytes live.
struct Header {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, MetadataValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

/// A validated GGUF file (version 2 or 3, little-endian).
pub struct GgufFile {
    storage: Storage,
    header: Header,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.header.version)
            .field("alignment", &self.header.alignment)
            .field("data_offset", &self.header.data_offset)
            .field("n_metadata", &self.header.metadata.len())
            .field("n_tensors", &self.header.tensors.len())
            .field("n_bytes", &self.bytes().len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps `path` read-only and validates it. Errors name the path.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            cause: source,
        };
        let file = crate::input::open_mappable(path).map_err(io_err)?;
        // SAFETY: the map is read-only and private to this process. Another process truncating or
        // rewriting the file while it is mapped would change or remove bytes under us; that is the
        // usual contract of mapping model files (llama.cpp does the same) and is documented on
        // `GgufFile`. All reads go through slices of the map, bounded by its length.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        let header = parse(&map, Data::Present).map_err(|source| GgufError::Invalid {
            path: path.to_path_buf(),
            cause: source,
        })?;
        Ok(GgufFile {
            storage: Storage::Mapped(map),
            header,
        })
    }

    /// Validates a file held in memory (tests, fuzzing, files that arrive over a pipe). The bytes
    /// are copied once into an 8-byte-aligned buffer so typed tensor views work as on a map.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        let storage = Storage::aligned_copy(bytes);
        let header = parse(storage.bytes(), Data::Present)?;
        Ok(GgufFile { storage, header })
    }

    /// The header of a file not written yet (what [`GgufBuilder::header`](super::GgufBuilder::header)
    /// returns): metadata and tensor infos validated as in a whole file, except that the tensor
    /// data lies beyond these bytes. [`tensor`](Self::tensor) and [`tensors`](Self::tensors) find
    /// no data there. `latte convert` reads its plan through the model loaders this way.
    pub fn from_header(bytes: Vec<u8>) -> Result<Self, GgufError> {
        let storage = Storage::aligned_copy(bytes);
        let header = parse(storage.bytes(), Data::Absent)?;
        Ok(GgufFile { storage, header })
    }

    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// `general.alignment`, or 32 when absent.
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Absolute offset of the tensor data section (the end of the header, aligned).
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.header.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        let &i = self.header.key_index.get(key)?;
        self.header.metadata.get(i).map(|(_, v)| v)
    }

    /// Tensor infos in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        let &i = self.header.tensor_index.get(name)?;
        self.header.tensors.get(i)
    }

    /// A zero-copy view of the tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.view(self.tensor_info(name)?)
    }

    /// Views of every tensor, in file order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorView<'_>> {
        self.header
            .tensors
            .iter()
            .filter_map(|info| self.view(info))
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// Whether the bytes are a map of a file (paged on demand) rather than a copy in memory
    /// (`from_bytes`, `from_header`), which is resident as a whole from the start.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped(_))
    }

    /// Advises the kernel about the pages of `range` (absolute file offsets, clamped to the file):
    /// prefetch them, or drop them from this process's memory. Returns whether advice was given:
    /// `false` for files held in memory (nothing to page) and when the kernel refused; advice is a
    /// hint, so callers need not act on it.
    pub fn advise(&self, range: Range<u64>, advice: PageAdvice) -> bool {
        let Storage::Mapped(map) = &self.storage else {
            return false;
        };
        let len = map.len() as u64;
        let (start, end) = (range.start.min(len), range.end.min(len));
        if start >= end {
            return false;
        }
        let (offset, n) = (start as usize, (end - start) as usize);
        match advice {
            PageAdvice::WillNeed => map
                .advise_range(memmap2::Advice::WillNeed, offset, n)
                .is_ok(),
            // SAFETY: the map is read-only and private and never written, so its pages are clean
            // copies of the file: MADV_DONTNEED only drops them, and the next read of any slice
            // handed out earlier faults the same file bytes back in. The range lies inside the
            // map (clamped above; memmap2 aligns the start down to a page).
            PageAdvice::DontNeed => unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, n)
                    .is_ok()
            },
        }
    }

    fn view<'a>(&'a self, info: &'a TensorInfo) -> Option<TensorView<'a>> {
        // Validated at parse time; `get` keeps this total anyway.
        let start = usize::try_from(info.offset).ok()?;
        let end = start.checked_add(usize::try_from(info.n_bytes).ok()?)?;
        let data = self.bytes().get(start..end)?;
        TensorView::new(&info.name, info.ty, &info.dims, data).ok()
    }
}

/// Whether the tensor data follows the header in the bytes parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Data {
    Present,
    /// A header on its own: tensors may lie anywhere past it (still aligned, not overlapping).
    Absent,
}

fn parse(bytes: &[u8], data: Data) -> Result<Header, FormatError> {
    let mut c = Cursor::new(bytes);
    let magic = c
        .take(4, "header.magic")
        .map_err(|_| FormatError::BadMagic {
            found: bytes.to_vec(),
        })?;
    if magic != MAGIC {
        return Err(FormatError::BadMagic {
            found: magic.to_vec(),
        });
    }
    let version = c.u32("header.version")?;
    match version {
        2 | 3 => {}
        v if matches!(v.swap_bytes(), 2 | 3) => {
            return Err(FormatError::BigEndian {
                version: v.swap_bytes(),
            })
        }
        v => return Err(FormatError::UnsupportedVersion { version: v }),
    }
    // Smallest possible tensor info: empty name (8) + n_dims (4) + type (4) + offset (8).
    let n_tensors = c.count(24, "header.n_tensors")?;
    // Smallest possible key/value: a 1-byte key (9) + type (4) + a 1-byte value.
    let n_kv = c.count(14, "header.n_kv")?;

    let (metadata, key_index, value_offsets) = parse_metadata(&mut c, n_kv)?;
    let alignment = alignment_of(&metadata, &key_index, &value_offsets)?;
    let (mut tensors, tensor_index, field_offsets) = parse_tensor_infos(&mut c, n_tensors)?;

    // The data section starts at the end of the header rounded up to the alignment. The header
    // is inside the file, so this cannot overflow; checked anyway.
    let data_offset = align_up(c.pos(), alignment).ok_or(FormatError::Truncated {
        field: "header padding".into(),
        offset: c.pos(),
        needed: alignment,
        available: c.remaining(),
    })?;
    place_tensors(
        &mut tensors,
        &field_offsets,
        data_offset,
        alignment,
        match data {
            Data::Present => bytes.len() as u64,
            Data::Absent => u64::MAX,
        },
    )?;

    Ok(Header {
        version,
        alignment,
        data_offset,
        metadata,
        key_index,
        tensors,
        tensor_index,
    })
}

/// Metadata in file order, its index by key, and the byte offset of each value.
type Metadata = (
    Vec<(String, MetadataValue)>,
    HashMap<String, usize>,
    Vec<u64>,
);

fn parse_metadata(c: &mut Cursor<'_>, n_kv: u64) -> Result<Metadata, FormatError> {
    let reserve = initial_capacity(n_kv);
    let mut metadata = Vec::with_capacity(reserve);
    let mut index = HashMap::with_capacity(reserve);
    let mut value_offsets = Vec::with_capacity(reserve);
    for i in 0..n_kv {
        let offset = c.pos();
        let key = c.string(&format!("metadata key #{i}"))?;
        if key.is_empty() {
            return Err(FormatError::EmptyKey { index: i, offset });
        }
        if index.contains_key(&key) {
            return Err(FormatError::DuplicateKey { key, offset });
        }
        let ty = value_type(c, &key)?;
        value_offsets.push(c.pos());
        let value = parse_value(c, ty, &key, 0)?;
        index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }
    Ok((metadata, index, value_offsets))
}

fn value_type(c: &mut Cursor<'_>, key: &str) -> Result<ValueType, FormatError> {
    let offset = c.pos();
    let id = c.u32(key)?;
    ValueType::from_id(id).ok_or(FormatError::UnknownValueType {
        key: key.into(),
        type_id: id,
        offset,
    })
}

fn parse_value(
    c: &mut Cursor<'_>,
    ty: ValueType,
    key: &str,
    depth: usize,
) -> Result<MetadataValue, FormatError> {
    Ok(match ty {
        ValueType::U8 => MetadataValue::U8(c.u8(key)?),
        ValueType::I8 => MetadataValue::I8(c.u8(key)? as i8),
        ValueType::U16 => MetadataValue::U16(u16::from_le_bytes(fixed(c, key)?)),
        ValueType::I16 => MetadataValue::I16(i16::from_le_bytes(fixed(c, key)?)),
        ValueType::U32 => MetadataValue::U32(c.u32(key)?),
        ValueType::I32 => MetadataValue::I32(c.u32(key)? as i32),
        ValueType::F32 => MetadataValue::F32(f32::from_bits(c.u32(key)?)),
        ValueType::Bool => MetadataValue::Bool(boolean(c, key)?),
        ValueType::String => MetadataValue::String(c.string(key)?),
        ValueType::Array => MetadataValue::Array(parse_array(c, key, depth + 1)?),
        ValueType::U64 => MetadataValue::U64(c.u64(key)?),
        ValueType::I64 => MetadataValue::I64(c.u64(key)? as i64),
        ValueType::F64 => MetadataValue::F64(f64::from_bits(c.u64(key)?)),
    })
}

fn fixed<const N: usize>(c: &mut Cursor<'_>, key: &str) -> Result<[u8; N], FormatError> {
    let mut out = [0u8; N];
    out.copy_from_slice(c.take(N as u64, key)?);
    Ok(out)
}

fn boolean(c: &mut Cursor<'_>, key: &str) -> Result<bool, FormatError> {
    let offset = c.pos();
    match c.u8(key)? {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(FormatError::InvalidBool {
            key: key.into(),
            value,
            offset,
        }),
    }
}

/// An array value: element type, count, elements. `depth` counts enclosing arrays (1 for a
/// top-level array); nesting is refused past [`MAX_ARRAY_DEPTH`] so recursion stays shallow.
fn parse_array(c: &mut Cursor<'_>, key: &str, depth: usize) -> Result<MetadataArray, FormatError> {
    let offset = c.pos();
    if depth > MAX_ARRAY_DEPTH {
        return Err(FormatError::NestingTooDeep {
            key: key.into(),
            limit: MAX_ARRAY_DEPTH,
            offset,
        });
    }
    let ty = value_type(c, key)?;
    let n = c.count(ty.min_size() as u64, key)?;
    // Fixed-size elements: one bounds check for the whole run, then plain conversions.
    fn run<'a, const N: usize>(
        c: &mut Cursor<'a>,
        n: u64,
        key: &str,
    ) -> Result<impl Iterator<Item = [u8; N]> + 'a, FormatError> {
        // `count` checked n * N <= remaining, so this cannot overflow.
        let bytes = c.take(n * N as u64, key)?;
        Ok(bytes.chunks_exact(N).map(|ch| {
            let mut a = [0u8; N];
            a.copy_from_slice(ch);
            a
        }))
    }
    Ok(match ty {
        ValueType::U8 => MetadataArray::U8(c.take(n, key)?.to_vec()),
        ValueType::I8 => MetadataArray::I8(c.take(n, key)?.iter().map(|&b| b as i8).collect()),
        ValueType::U16 => MetadataArray::U16(run(c, n, key)?.map(u16::from_le_bytes).collect()),
        ValueType::I16 => MetadataArray::I16(run(c, n, key)?.map(i16::from_le_bytes).collect()),
        ValueType::U32 => MetadataArray::U32(run(c, n, key)?.map(u32::from_le_bytes).collect()),
        ValueType::I32 => MetadataArray::I32(run(c, n, key)?.map(i32::from_le_bytes).collect()),
        ValueType::F32 => MetadataArray::F32(run(c, n, key)?.map(f32::from_le_bytes).collect()),
        ValueType::U64 => MetadataArray::U64(run(c, n, key)?.map(u64::from_le_bytes).collect()),
        ValueType::I64 => MetadataArray::I64(run(c, n, key)?.map(i64::from_le_bytes).collect()),
        ValueType::F64 => MetadataArray::F64(run(c, n, key)?.map(f64::from_le_bytes).collect()),
        ValueType::Bool => {
            MetadataArray::Bool((0..n).map(|_| boolean(c, key)).collect::<Result<_, _>>()?)
        }
        ValueType::String => {
            MetadataArray::String((0..n).map(|_| c.string(key)).collect::<Result<_, _>>()?)
        }
        ValueType::Array => MetadataArray::Array(
            (0..n)
                .map(|_| parse_array(c, key, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn alignment_of(
    metadata: &[(String, MetadataValue)],
    index: &HashMap<String, usize>,
    value_offsets: &[u64],
) -> Result<u64, FormatError> {
    let Some(&i) = index.get(ALIGNMENT_KEY) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let offset = value_offsets[i];
    match metadata[i].1 {
        MetadataValue::U32(a) if a.is_power_of_two() => Ok(a.into()),
        MetadataValue::U32(value) => Err(FormatError::AlignmentNotPowerOfTwo { value, offset }),
        ref other => Err(FormatError::AlignmentNotU32 {
            found: other.value_type(),
            offset,
        }),
    }
}

type TensorInfos = (Vec<TensorInfo>, HashMap<String, usize>, Vec<u64>);

/// Reads the tensor infos. Offsets are left relative (placed later); the third vector holds the
/// byte offset of each info's offset field, for error messages.
fn parse_tensor_infos(c: &mut Cursor<'_>, n_tensors: u64) -> Result<TensorInfos, FormatError> {
    let reserve = initial_capacity(n_tensors);
    let mut tensors = Vec::with_capacity(reserve);
    let mut index = HashMap::with_capacity(reserve);
    let mut field_offsets = Vec::with_capacity(reserve);
    for i in 0..n_tensors {
        let name_offset = c.pos();
        let name = c.string(&format!("tensor name #{i}"))?;
        if index.contains_key(&name) {
            return Err(FormatError::DuplicateTensor {
                tensor: name,
                offset: name_offset,
            });
        }
        let dims_offset = c.pos();
        let n_dims = c.u32(&name)?;
        if n_dims as usize > MAX_DIMS {
            return Err(FormatError::TooManyDims {
                tensor: name,
                n_dims,
                offset: dims_offset,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for axis in 0..n_dims as usize {
            let offset = c.pos();
            let d = c.u64(&name)?;
            if d == 0 {
                return Err(FormatError::ZeroDim {
                    tensor: name,
                    axis,
                    offset,
                });
            }
            dims.push(d);
        }
        let type_offset = c.pos();
        let type_id = c.u32(&name)?;
        let ty = TensorType::from_id(type_id).ok_or_else(|| FormatError::UnknownTensorType {
            tensor: name.clone(),
            type_id,
            offset: type_offset,
        })?;
        let n_bytes = tensor_bytes(&name, ty, &dims, dims_offset, type_offset)?;
        field_offsets.push(c.pos());
        let offset = c.u64(&name)?;
        index.insert(name.clone(), tensors.len());
        tensors.push(TensorInfo {
            name,
            ty,
            dims,
            offset,
            n_bytes,
        });
    }
    Ok((tensors, index, field_offsets))
}

/// Bytes of a tensor, refusing shapes whose element count or byte size overflows and rows that
/// are not whole blocks.
fn tensor_bytes(
    name: &str,
    ty: TensorType,
    dims: &[u64],
    dims_offset: u64,
    type_offset: u64,
) -> Result<u64, FormatError> {
    let overflow = || FormatError::ShapeOverflow {
        tensor: name.into(),
        dims: dims.to_vec(),
        offset: dims_offset,
    };
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let row_len = dims.first().copied().unwrap_or(1);
    if row_len % ty.block_size() as u64 != 0 {
        return Err(FormatError::RowNotBlockMultiple {
            tensor: name.into(),
            ty,
            row_len,
            block_size: ty.block_size(),
            offset: type_offset,
        });
    }
    let row_bytes = ty.row_bytes(row_len).ok_or_else(overflow)?;
    let rows = dims.iter().skip(1).product::<u64>(); // the full product did not overflow
    row_bytes.checked_mul(rows).ok_or_else(overflow)
}

/// Turns relative offsets into absolute ones and checks each tensor lies inside the file, is
/// aligned, and overlaps no other.
fn place_tensors(
    tensors: &mut [TensorInfo],
    field_offsets: &[u64],
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Result<(), FormatError> {
    for (t, &offset) in tensors.iter_mut().zip(field_offsets) {
        let start = u128::from(data_offset) + u128::from(t.offset);
        if start + u128::from(t.n_bytes) > u128::from(file_len) {
            return Err(FormatError::TensorOutOfBounds {
                tensor: t.name.clone(),
                start,
                n_bytes: t.n_bytes,
                file_len,
                offset,
            });
        }
        let start = start as u64; // <= file_len
        if !start.is_multiple_of(alignment) {
            return Err(FormatError::TensorMisaligned {
                tensor: t.name.clone(),
                start,
                alignment,
                offset,
            });
        }
        t.offset = start;
    }
    // Overlap: sort by start; each tensor must begin at or after the end of the one before.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].offset);
    for pair in order.windows(2) {
        let (a, b) = (&tensors[pair[0]], &tensors[pair[1]]);
        // Both lie inside the file, so the sum cannot overflow.
        if b.offset < a.offset + a.n_bytes {
            return Err(FormatError::TensorOverlap {
                tensor: b.name.clone(),
                other: a.name.clone(),
                start: b.offset,
                offset: field_offsets[pair[1]],
            });
        }
    }
    Ok(())
}

/// Room reserved up front for `count` entries. The count is already bounded by the bytes left
/// (`Cursor::count`), but an entry costs several times more in memory than its minimum in the
/// file, so a hostile count on a multi-GB file could still reserve tens of GB. Beyond this cap,
/// vectors grow only as entries are actually parsed.
fn initial_capacity(count: u64) -> usize {
    const CAP: u64 = 4096;
    count.min(CAP) as usize
}

pub(crate) fn align_up(x: u64, alignment: u64) -> Option<u64> {
    Some(x.checked_add(alignment - 1)? / alignment * alignment)
}
