;; Arithmetic on numbers, written by hand in the WebAssembly text format.
;;
;; It follows flowstream's sandbox ABI (docs/sandbox.md): it exports its
;; memory, alloc and dealloc, and functions of type (ptr, len) -> i64 that
;; read a MessagePack array of items at ptr and answer with another array,
;; one entry per item, at (result >> 32) of (result & 0xffffffff) bytes.
;; wasmtime compiles the text format when the module loads, so no toolchain
;; is needed:
;;
;;   {id: f, type: wasm.map,
;;    config: {module: examples/wasm/arith.wat, function: double_plus_one}}
;;
;; Items must be integers (any MessagePack int form) or floats; any other
;; item makes the call answer an error string, which fails it.
;;
;;   double           x * 2                      (wasm.map)
;;   double_plus_one  x * 2 + 1                  (wasm.map)
;;   is_odd           integers: x is odd         (wasm.filter)
;;   twice            [x, x]                     (wasm.flat_map)
;;   echo             the batch as it came       (any node; a round trip)
(module
  (memory (export "memory") 1)

  ;; The error answer, a MessagePack str (0xb5: a fixstr of 21 bytes).
  (data (i32.const 16) "\b5items must be numbers")

  (global $heap (mut i32) (i32.const 1024))  ;; the bump allocator's top
  (global $in (mut i32) (i32.const 0))       ;; reading position
  (global $out (mut i32) (i32.const 0))      ;; writing position
  (global $out_buf (mut i32) (i32.const 0))  ;; the reused output buffer
  (global $out_cap (mut i32) (i32.const 0))
  (global $float (mut i32) (i32.const 0))    ;; the item read is a float
  (global $fval (mut f64) (f64.const 0))     ;; ...and its value
  (global $bad (mut i32) (i32.const 0))      ;; an item was not a number

  ;; alloc: a bump allocator that grows the memory; 0 when it cannot.
  (func $alloc (export "alloc") (param $size i32) (result i32)
    (local $ptr i32) (local $top i32) (local $pages i32)
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $top (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (local.get $top) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (local.set $pages
          (i32.sub
            (i32.shr_u (i32.add (local.get $top) (i32.const 65535)) (i32.const 16))
            (memory.size)))
        (if (i32.eq (memory.grow (local.get $pages)) (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $top))
    (local.get $ptr))

  ;; dealloc: the host frees only its input buffer when it needs a bigger
  ;; one; a bump allocator just lets it go.
  (func (export "dealloc") (param i32 i32))

  ;; --- reading MessagePack -------------------------------------------------

  (func $byte (result i32)
    (local $b i32)
    (local.set $b (i32.load8_u (global.get $in)))
    (global.set $in (i32.add (global.get $in) (i32.const 1)))
    (local.get $b))

  ;; n big-endian bytes as an unsigned i64
  (func $be (param $n i32) (result i64)
    (local $v i64)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $v (i64.or (i64.shl (local.get $v) (i64.const 8))
                              (i64.extend_i32_u (call $byte))))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $v))

  ;; an array header: the number of entries (-1 if it is no array)
  (func $array (result i32)
    (local $b i32)
    (local.set $b (call $byte))
    (if (i32.eq (i32.and (local.get $b) (i32.const 0xf0)) (i32.const 0x90))
      (then (return (i32.and (local.get $b) (i32.const 0x0f)))))
    (if (i32.eq (local.get $b) (i32.const 0xdc))
      (then (return (i32.wrap_i64 (call $be (i32.const 2))))))
    (if (i32.eq (local.get $b) (i32.const 0xdd))
      (then (return (i32.wrap_i64 (call $be (i32.const 4))))))
    (i32.const -1))

  ;; a number: an int is returned, a float sets $float and $fval; anything
  ;; else sets $bad (the caller answers the error string)
  (func $number (result i64)
    (local $b i32)
    (global.set $float (i32.const 0))
    (local.set $b (call $byte))
    (if (i32.lt_u (local.get $b) (i32.const 0x80))
      (then (return (i64.extend_i32_u (local.get $b)))))
    (if (i32.ge_u (local.get $b) (i32.const 0xe0))
      (then (return (i64.sub (i64.extend_i32_u (local.get $b)) (i64.const 256)))))
    (if (i32.eq (local.get $b) (i32.const 0xcc)) (then (return (call $be (i32.const 1)))))
    (if (i32.eq (local.get $b) (i32.const 0xcd)) (then (return (call $be (i32.const 2)))))
    (if (i32.eq (local.get $b) (i32.const 0xce)) (then (return (call $be (i32.const 4)))))
    (if (i32.eq (local.get $b) (i32.const 0xcf)) (then (return (call $be (i32.const 8)))))
    (if (i32.eq (local.get $b) (i32.const 0xd0))
      (then (return (i64.extend8_s (call $be (i32.const 1))))))
    (if (i32.eq (local.get $b) (i32.const 0xd1))
      (then (return (i64.extend16_s (call $be (i32.const 2))))))
    (if (i32.eq (local.get $b) (i32.const 0xd2))
      (then (return (i64.extend32_s (call $be (i32.const 4))))))
    (if (i32.eq (local.get $b) (i32.const 0xd3)) (then (return (call $be (i32.const 8)))))
    (if (i32.eq (local.get $b) (i32.const 0xca))
      (then
        (global.set $float (i32.const 1))
        (global.set $fval (f64.promote_f32
          (f32.reinterpret_i32 (i32.wrap_i64 (call $be (i32.const 4))))))
        (return (i64.const 0))))
    (if (i32.eq (local.get $b) (i32.const 0xcb))
      (then
        (global.set $float (i32.const 1))
        (global.set $fval (f64.reinterpret_i64 (call $be (i32.const 8))))
        (return (i64.const 0))))
    (global.set $bad (i32.const 1))
    (i64.const 0))

  ;; --- writing MessagePack ---------------------------------------------------

  (func $put (param $b i32)
    (i32.store8 (global.get $out) (local.get $b))
    (global.set $out (i32.add (global.get $out) (i32.const 1))))

  (func $put_be (param $v i64) (param $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (call $put (i32.wrap_i64 (i64.shr_u (local.get $v)
                                             (i64.extend_i32_u (i32.mul (local.get $n) (i32.const 8))))))
        (br $next))))

  (func $put_array (param $n i32)
    (call $put (i32.const 0xdd))
    (call $put_be (i64.extend_i32_u (local.get $n)) (i32.const 4)))

  (func $put_int (param $v i64)
    (call $put (i32.const 0xd3))
    (call $put_be (local.get $v) (i32.const 8)))

  (func $put_float (param $v f64)
    (call $put (i32.const 0xcb))
    (call $put_be (i64.reinterpret_f64 (local.get $v)) (i32.const 8)))

  ;; Start reading at ptr and writing into an output buffer of at least
  ;; size bytes (reused across calls, grown when too small); the number of
  ;; items, or -1 (then the answer is the error string).
  (func $begin (param $ptr i32) (param $size i32) (result i32)
    (if (i32.gt_u (local.get $size) (global.get $out_cap))
      (then
        (global.set $out_buf (call $alloc (local.get $size)))
        (if (i32.eqz (global.get $out_buf)) (then unreachable))
        (global.set $out_cap (local.get $size))))
    (global.set $in (local.get $ptr))
    (global.set $out (global.get $out_buf))
    (global.set $bad (i32.const 0))
    (call $array))

  (func $answer (result i64)
    (if (global.get $bad) (then (return (i64.const 0x0000001000000016))))
    (i64.or (i64.shl (i64.extend_i32_u (global.get $out_buf)) (i64.const 32))
            (i64.extend_i32_u (i32.sub (global.get $out) (global.get $out_buf)))))

  ;; --- the exported functions ------------------------------------------------

  ;; op 0: x * 2, op 1: x * 2 + 1
  (func $scale (param $ptr i32) (param $len i32) (param $op i32) (result i64)
    (local $n i32) (local $x i64)
    ;; a number of a batch takes at least a byte, its answer 9 at most
    (local.set $n (call $begin (local.get $ptr) (i32.add (i32.mul (local.get $len) (i32.const 9)) (i32.const 5))))
    (if (i32.lt_s (local.get $n) (i32.const 0)) (then (return (i64.const 0x0000001000000016))))
    (call $put_array (local.get $n))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $x (call $number))
        (br_if $done (global.get $bad))
        (if (global.get $float)
          (then (call $put_float
                  (f64.add (f64.mul (global.get $fval) (f64.const 2))
                           (f64.convert_i32_u (local.get $op)))))
          (else (call $put_int
                  (i64.add (i64.mul (local.get $x) (i64.const 2))
                           (i64.extend_i32_u (local.get $op))))))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (call $answer))

  (func (export "double") (param $ptr i32) (param $len i32) (result i64)
    (call $scale (local.get $ptr) (local.get $len) (i32.const 0)))

  (func (export "double_plus_one") (param $ptr i32) (param $len i32) (result i64)
    (call $scale (local.get $ptr) (local.get $len) (i32.const 1)))

  (func (export "is_odd") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $x i64)
    (local.set $n (call $begin (local.get $ptr) (i32.add (local.get $len) (i32.const 5))))
    (if (i32.lt_s (local.get $n) (i32.const 0)) (then (return (i64.const 0x0000001000000016))))
    (call $put_array (local.get $n))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $x (call $number))
        (br_if $done (global.get $bad))
        ;; 0xc3 is true, 0xc2 false; a float is never odd
        (call $put (i32.add (i32.const 0xc2)
                            (i32.and (i32.eqz (global.get $float))
                                     (i32.wrap_i64 (i64.and (local.get $x) (i64.const 1))))))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (call $answer))

  (func (export "twice") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $x i64)
    (local.set $n (call $begin (local.get $ptr) (i32.add (i32.mul (local.get $len) (i32.const 19)) (i32.const 5))))
    (if (i32.lt_s (local.get $n) (i32.const 0)) (then (return (i64.const 0x0000001000000016))))
    (call $put_array (local.get $n))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $x (call $number))
        (br_if $done (global.get $bad))
        (call $put (i32.const 0x92))  ;; a fixarray of 2
        (if (global.get $float)
          (then (call $put_float (global.get $fval)) (call $put_float (global.get $fval)))
          (else (call $put_int (local.get $x)) (call $put_int (local.get $x))))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (call $answer))

  (func (export "echo") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len))))
)
