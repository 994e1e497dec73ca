;; Hands the host pointers outside its memory; which import depends on the message's first byte.
(module
  (import "framegate" "read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "framegate" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "framegate" "meta_get" (func $meta_get (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "fg_abi_v1"))
  (func (export "fg_on_message") (param i64 i32 i32 i32) (result i32)
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1)))
    (if (i32.eq (i32.load8_u (i32.const 0)) (i32.const 114)) ;; 'r': read into far memory
      (then (drop (call $read (i32.const 0) (i32.const 0) (i32.const 0x7fff0000) (i32.const 16)))))
    (if (i32.eq (i32.load8_u (i32.const 0)) (i32.const 115)) ;; 's': send from past the end
      (then (drop (call $send (i32.const 1) (i32.const 65530) (i32.const 100)))))
    (if (i32.eq (i32.load8_u (i32.const 0)) (i32.const 109)) ;; 'm': a negative length
      (then (drop (call $meta_get (i32.const 0) (i32.const -1) (i32.const 0) (i32.const 4)))))
    (i32.const 0)))
