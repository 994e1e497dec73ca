;; Greets the client from fg_on_open, before it sends anything; drops what the client sends.
(module
  (import "framegate" "send" (func $send (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "hello")
  (func (export "fg_abi_v1"))
  (func (export "fg_on_open") (param i64) (result i32)
    (drop (call $send (i32.const 1) (i32.const 0) (i32.const 5)))
    (i32.const 0))
  (func (export "fg_on_message") (param i64 i32 i32 i32) (result i32)
    (i32.const 1)))
