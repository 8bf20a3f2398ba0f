//! A word-at-a-time `memcmp` for the Wasm build. wasi-libc's compares byte by byte, and
//! policies compare node and model names many times per decision: in a profile of seed-rules
//! at 16 nodes it was 15 % of the whole decision. Defining the symbol here links this one in
//! place of libc's (natively, the platform's own is used).

/// Compare `n` bytes at `a` and `b`: negative, zero or positive like C's `memcmp`.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's contract; every read below is within the first `n` bytes.
    unsafe { compare(a, b, n) }
}

/// The comparison itself, also compiled natively so that its tests run everywhere.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
#[cfg(any(target_arch = "wasm32", test))]
#[allow(unsafe_code)]
#[inline(always)]
pub(crate) unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`; unaligned reads are allowed by `read_unaligned`.
        let (x, y) = unsafe {
            (
                a.add(i).cast::<u64>().read_unaligned(),
                b.add(i).cast::<u64>().read_unaligned(),
            )
        };
        if x != y {
            // Little-endian: the lowest differing byte is the first one in memory.
            let shift = (x ^ y).trailing_zeros() & !7;
            return i32::from((x >> shift) as u8) - i32::from((y >> shift) as u8);
        }
        i += 8;
    }
    while i < n {
        // SAFETY: `i < n`.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::compare;

    fn sign(v: i32) -> i32 {
        v.signum()
    }

    #[test]
    fn agrees_with_slice_ordering_on_every_length_and_difference_position() {
        for len in 0..40usize {
            let base: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            #[allow(unsafe_code)]
            let same = unsafe { compare(base.as_ptr(), base.clone().as_ptr(), len) };
            assert_eq!(same, 0, "equal at length {len}");
            for at in 0..len {
                for delta in [1u8, 0x80, 0xff] {
                    let mut other = base.clone();
                    other[at] = other[at].wrapping_add(delta);
                    let expected = base.cmp(&other) as i32;
                    #[allow(unsafe_code)]
                    let got = unsafe { compare(base.as_ptr(), other.as_ptr(), len) };
                    assert_eq!(sign(got), expected, "length {len}, difference at {at}, delta {delta}");
                }
            }
        }
    }
}
