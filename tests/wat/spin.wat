;; Loops forever on every message: the call deadline must cut it off.
(module
  (memory (export "memory") 1)
  (func (export "fg_abi_v1"))
  (func (export "fg_on_message") (param i64 i32 i32 i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 0)))
