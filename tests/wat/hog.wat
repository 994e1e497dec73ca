;; Grows its memory without end on every message: the memory cap must cut it off.
(module
  (memory (export "memory") 1)
  (func (export "fg_abi_v1"))
  (func (export "fg_on_message") (param i64 i32 i32 i32) (result i32)
    (loop $more
      (drop (memory.grow (i32.const 16)))
      (br $more))
    (i32.const 0)))
