;; Answers each message from the client with its payload behind a prefix and drops it: "b:" when
;; it came in a batch (`fg_on_messages`), "m:" when one by one (`fg_on_message`). A message
;; starting with "c" closes the connection (4000, "bye"); in a batch, one starting with "t" traps
;; and one starting with "e" ends the batch early (after its answer). One starting with "u" goes
;; on unanswered (to the route's sinks). Messages towards the client go on with their `msg.id`
;; and ":" before them.
(module
  (import "framegate" "next" (func $next (param i32) (result i64)))
  (import "framegate" "read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "framegate" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "framegate" "close" (func $close (param i32 i32 i32) (result i32)))
  (import "framegate" "meta_get" (func $meta_get (param i32 i32 i32 i32) (result i32)))
  (import "framegate" "replace" (func $replace (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 48) "bye")
  (data (i32.const 64) "msg.id")
  (func (export "fg_abi_v1"))

  ;; Reads the message in hand behind `prefix` at 100 and answers it; returns its first byte.
  (func $answer (param $prefix i32) (param $len i32) (result i32)
    (i32.store16 (i32.const 100) (local.get $prefix))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 102) (i32.const 64)))
    (if (i32.ne (i32.load8_u (i32.const 102)) (i32.const 99)) ;; not 'c'
      (then (drop (call $send (i32.const 1) (i32.const 100) (i32.add (local.get $len) (i32.const 2))))))
    (i32.load8_u (i32.const 102)))

  ;; Replaces the message in hand (towards the client) with its `msg.id`, ":" and itself.
  (func $tag (param $len i32)
    (local $n i32)
    (local.set $n (call $meta_get (i32.const 64) (i32.const 6) (i32.const 300) (i32.const 16)))
    (i32.store8 (i32.add (i32.const 300) (local.get $n)) (i32.const 58)) ;; ':'
    (drop (call $read (i32.const 0) (i32.const 0) (i32.add (i32.const 301) (local.get $n)) (i32.const 64)))
    (drop (call $replace (i32.const 300) (i32.add (i32.add (local.get $n) (i32.const 1)) (local.get $len)))))

  ;; Whether the message in hand starts with "u" (goes on to the sinks).
  (func $onwards (result i32)
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 102) (i32.const 1)))
    (i32.eq (i32.load8_u (i32.const 102)) (i32.const 117)))

  (func (export "fg_on_message") (param i64 i32 i32 i32) (result i32)
    (if (local.get 1)
      (then (call $tag (local.get 3)) (return (i32.const 0))))
    (if (call $onwards) (then (return (i32.const 0))))
    (if (i32.eq (call $answer (i32.const 0x3a6d) (local.get 3)) (i32.const 99)) ;; "m:", 'c'
      (then
        (drop (call $close (i32.const 4000) (i32.const 48) (i32.const 3)))
        (return (i32.const 2))))
    (i32.const 1))

  (func (export "fg_on_messages") (param i64 i32) (result i32)
    (local $verdict i32) (local $next i64) (local $first i32)
    (loop $each
      (local.set $next (call $next (local.get $verdict)))
      (if (i64.lt_s (local.get $next) (i64.const 0))
        (then (return (i32.const 0))))
      (local.set $verdict (i32.const 0))
      (if (local.get 1)
        (then (call $tag (i32.wrap_i64 (local.get $next))) (br $each)))
      (br_if $each (call $onwards))
      (local.set $first (call $answer (i32.const 0x3a62) (i32.wrap_i64 (local.get $next)))) ;; "b:"
      (if (i32.eq (local.get $first) (i32.const 116)) ;; 't'
        (then unreachable))
      (if (i32.eq (local.get $first) (i32.const 101)) ;; 'e'
        (then (return (i32.const 1))))
      (local.set $verdict (i32.const 1))
      (if (i32.eq (local.get $first) (i32.const 99)) ;; 'c'
        (then
          (drop (call $close (i32.const 4000) (i32.const 48) (i32.const 3)))
          (local.set $verdict (i32.const 2))))
      (br $each))
    (i32.const 0)))
