// Arithmetic on numbers, in AssemblyScript, for flowstream's sandbox ABI
// (docs/sandbox.md): exported memory, alloc, dealloc, and functions
// (ptr: i32, len: i32) -> i64 that read a MessagePack array of items at ptr
// and answer another, one entry per item, at (result >> 32), of
// (result & 0xffffffff) bytes. Items must be ints or floats; anything else
// answers an error string, which fails the call.
//
//   double           x * 2           (wasm.map; benchmarks' W1 map step)
//   double_plus_one  x * 2 + 1       (wasm.map)
//   is_odd           integers: odd   (wasm.filter)
//
// Build: npm install && npm run build (the README beside this file).

// No imports at all: an abort (a failed assertion, heap exhausted) traps.
export function abort(
  message: usize,
  fileName: usize,
  line: u32,
  column: u32,
): void {
  unreachable();
}

// --- memory: what the host asks for ------------------------------------------

export function alloc(size: i32): usize {
  return heap.alloc(<usize>size);
}

export function dealloc(ptr: usize, size: i32): void {
  heap.free(ptr);
}

// --- reading MessagePack -----------------------------------------------------

let inPos: usize = 0;
let isFloat = false;
let floatValue: f64 = 0;
let bad = false;

// @ts-ignore: decorator
@inline
function byte(): u32 {
  const b = <u32>load<u8>(inPos);
  inPos += 1;
  return b;
}

// @ts-ignore: decorator
@inline
function u16be(): u64 {
  const v = bswap<u16>(load<u16>(inPos));
  inPos += 2;
  return <u64>v;
}

// @ts-ignore: decorator
@inline
function u32be(): u64 {
  const v = bswap<u32>(load<u32>(inPos));
  inPos += 4;
  return <u64>v;
}

// @ts-ignore: decorator
@inline
function u64be(): u64 {
  const v = bswap<u64>(load<u64>(inPos));
  inPos += 8;
  return v;
}

function arrayHeader(): i32 {
  const b = byte();
  if ((b & 0xf0) == 0x90) return <i32>(b & 0x0f);
  if (b == 0xdc) return <i32>u16be();
  if (b == 0xdd) return <i32>u32be();
  return -1;
}

// An int is returned; a float sets isFloat and floatValue; anything else
// sets bad.
function number(): i64 {
  const b = byte();
  isFloat = false;
  if (b < 0x80) return <i64>b;
  if (b >= 0xe0) return <i64>b - 256;
  switch (b) {
    case 0xcc: return <i64>byte();
    case 0xcd: return <i64>u16be();
    case 0xce: return <i64>u32be();
    case 0xcf: return <i64>u64be();
    case 0xd0: return <i64><i8>byte();
    case 0xd1: return <i64><i16>u16be();
    case 0xd2: return <i64><i32>u32be();
    case 0xd3: return <i64>u64be();
    case 0xca: {
      isFloat = true;
      floatValue = <f64>reinterpret<f32>(<u32>u32be());
      return 0;
    }
    case 0xcb: {
      isFloat = true;
      floatValue = reinterpret<f64>(u64be());
      return 0;
    }
  }
  bad = true;
  return 0;
}

// --- writing MessagePack -----------------------------------------------------

let outBuf: usize = 0;
let outCap: usize = 0;
let outPos: usize = 0;

// "items must be numbers", a MessagePack fixstr
const ERROR = memory.data<u8>([
  0xb5, 105, 116, 101, 109, 115, 32, 109, 117, 115, 116, 32, 98, 101, 32, 110,
  117, 109, 98, 101, 114, 115,
]);
const ERROR_ANSWER: i64 = (<i64>ERROR << 32) | 22;

// @ts-ignore: decorator
@inline
function put(b: u32): void {
  store<u8>(outPos, b);
  outPos += 1;
}

function putArray(n: i32): void {
  put(0xdd);
  store<u32>(outPos, bswap<u32>(<u32>n));
  outPos += 4;
}

// The shortest form, as MessagePack encoders write it.
function putInt(v: i64): void {
  if (v >= 0) {
    if (v < 0x80) {
      put(<u32>v);
    } else if (v <= 0xff) {
      put(0xcc);
      put(<u32>v);
    } else if (v <= 0xffff) {
      put(0xcd);
      store<u16>(outPos, bswap<u16>(<u16>v));
      outPos += 2;
    } else if (v <= 0xffffffff) {
      put(0xce);
      store<u32>(outPos, bswap<u32>(<u32>v));
      outPos += 4;
    } else {
      put(0xd3);
      store<u64>(outPos, bswap<u64>(<u64>v));
      outPos += 8;
    }
  } else if (v >= -32) {
    put(<u32>(v & 0xff));
  } else if (v >= -128) {
    put(0xd0);
    put(<u32>(v & 0xff));
  } else if (v >= -32768) {
    put(0xd1);
    store<u16>(outPos, bswap<u16>(<u16>v));
    outPos += 2;
  } else if (v >= -2147483648) {
    put(0xd2);
    store<u32>(outPos, bswap<u32>(<u32>v));
    outPos += 4;
  } else {
    put(0xd3);
    store<u64>(outPos, bswap<u64>(<u64>v));
    outPos += 8;
  }
}

function putFloat(v: f64): void {
  put(0xcb);
  store<u64>(outPos, bswap<u64>(reinterpret<u64>(v)));
  outPos += 8;
}

// Start reading at ptr and writing into the output buffer (reused across
// calls: the ABI lets an answer live until the next call), grown to need
// bytes; returns the number of items, or -1 when the batch is no array.
function begin(ptr: usize, need: usize): i32 {
  if (need > outCap) {
    if (outBuf) heap.free(outBuf);
    outBuf = heap.alloc(need);
    outCap = need;
  }
  inPos = ptr;
  outPos = outBuf;
  bad = false;
  return arrayHeader();
}

function answer(): i64 {
  if (bad) return ERROR_ANSWER;
  return (<i64>outBuf << 32) | <i64>(outPos - outBuf);
}

// --- the exported functions --------------------------------------------------

function scale(ptr: usize, len: i32, plus: i64): i64 {
  // an item takes a byte at least, its answer 9 at most
  const n = begin(ptr, <usize>len * 9 + 5);
  if (n < 0) return ERROR_ANSWER;
  putArray(n);
  for (let i = 0; i < n; i++) {
    const x = number();
    if (bad) break;
    if (isFloat) putFloat(floatValue * 2 + <f64>plus);
    else putInt(x * 2 + plus);
  }
  return answer();
}

export function double(ptr: usize, len: i32): i64 {
  return scale(ptr, len, 0);
}

export function double_plus_one(ptr: usize, len: i32): i64 {
  return scale(ptr, len, 1);
}

export function is_odd(ptr: usize, len: i32): i64 {
  const n = begin(ptr, <usize>len + 5);
  if (n < 0) return ERROR_ANSWER;
  putArray(n);
  for (let i = 0; i < n; i++) {
    const x = number();
    if (bad) break;
    put(!isFloat && (x & 1) != 0 ? 0xc3 : 0xc2);
  }
  return answer();
}
