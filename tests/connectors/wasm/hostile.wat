;; A module that misbehaves on purpose, for the sandbox's tests.
;;
;; Its functions echo the batch back, except when a byte 0xff is in it
;; (MessagePack's -1, a negative fixint; the tests' other items are small
;; non-negative ints, which never hold that byte), where they misbehave.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))

  (func $alloc (export "alloc") (param $size i32) (result i32)
    (local $ptr i32) (local $top i32)
    (local.set $ptr (global.get $heap))
    (local.set $top (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (local.get $top) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow (i32.sub (i32.shr_u (i32.add (local.get $top) (i32.const 65535))
                                               (i32.const 16))
                                    (memory.size)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $top))
    (local.get $ptr))

  (func (export "dealloc") (param i32 i32))

  (func $has_minus_one (param $ptr i32) (param $len i32) (result i32)
    (block $no
      (loop $next
        (br_if $no (i32.eqz (local.get $len)))
        (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 0xff))
          (then (return (i32.const 1))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  (func $echo (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len))))

  ;; -1 spins forever
  (func (export "spin") (param $ptr i32) (param $len i32) (result i64)
    (if (call $has_minus_one (local.get $ptr) (local.get $len))
      (then (loop $forever (br $forever))))
    (call $echo (local.get $ptr) (local.get $len)))

  ;; -1 traps
  (func (export "trap") (param $ptr i32) (param $len i32) (result i64)
    (if (call $has_minus_one (local.get $ptr) (local.get $len))
      (then unreachable))
    (call $echo (local.get $ptr) (local.get $len)))

  ;; -1 grows the memory a page at a time until it cannot, then answers
  ;; (as an error string) how many pages it reached
  (func (export "bomb") (param $ptr i32) (param $len i32) (result i64)
    (local $pages i32)
    (if (call $has_minus_one (local.get $ptr) (local.get $len))
      (then
        (block $full
          (loop $more
            (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
            (br $more)))
        ;; "pages NNNNN": a fixstr of 11 bytes at 16
        (local.set $pages (memory.size))
        (i32.store8 (i32.const 16) (i32.const 0xab))
        (i32.store8 (i32.const 17) (i32.const 0x70)) ;; p
        (i32.store8 (i32.const 18) (i32.const 0x61)) ;; a
        (i32.store8 (i32.const 19) (i32.const 0x67)) ;; g
        (i32.store8 (i32.const 20) (i32.const 0x65)) ;; e
        (i32.store8 (i32.const 21) (i32.const 0x73)) ;; s
        (i32.store8 (i32.const 22) (i32.const 0x20))
        (i32.store8 (i32.const 23) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $pages) (i32.const 10000)) (i32.const 10))))
        (i32.store8 (i32.const 24) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $pages) (i32.const 1000)) (i32.const 10))))
        (i32.store8 (i32.const 25) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $pages) (i32.const 100)) (i32.const 10))))
        (i32.store8 (i32.const 26) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $pages) (i32.const 10)) (i32.const 10))))
        (i32.store8 (i32.const 27) (i32.add (i32.const 48) (i32.rem_u (local.get $pages) (i32.const 10))))
        (return (i64.const 0x000000100000000c))))
    (call $echo (local.get $ptr) (local.get $len)))

  ;; answers an output pointer far outside its memory
  (func (export "escape") (param $ptr i32) (param $len i32) (result i64)
    (i64.const 0x7fff000000001000))

  ;; answers an array of the wrong length (empty)
  (func (export "short") (param $ptr i32) (param $len i32) (result i64)
    (i32.store8 (i32.const 8) (i32.const 0x90))
    (i64.const 0x0000000800000001))
)
