;; Loops forever on a message starting with "s"; sends any other message back.
(module
  (import "framegate" "read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "framegate" "send" (func $send (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "fg_abi_v1"))
  (func (export "fg_on_message") (param i64 i32 i32 i32) (result i32)
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 0) (local.get 3)))
    (if (i32.eq (i32.load8_u (i32.const 0)) (i32.const 115))
      (then (loop $forever (br $forever))))
    (drop (call $send (local.get 2) (i32.const 0) (local.get 3)))
    (i32.const 1)))
