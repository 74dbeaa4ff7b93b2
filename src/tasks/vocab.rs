//! Names and words the generated code is made of.

pub const NAMES: &[&str] = &[
    "x", "y", "n", "name", "value", "items", "data", "result", "text", "count", "total", "key", "line", "node",
    "path", "msg", "item", "args", "buf", "out", "size", "index", "config", "row", "col", "parts", "seen", "tokens",
];

pub const FUNCTIONS: &[&str] = &[
    "len", "str", "int", "sorted", "max", "min", "sum", "open", "format", "join", "parse", "load", "check", "get_value",
    "run", "update", "process", "render", "split_line", "read",
];

pub const METHODS: &[&str] = &[
    "create", "load", "save", "update", "reset", "build", "from_dict", "to_text", "parse", "run", "close", "get",
];

pub const CLASSES: &[&str] = &["Parser", "Config", "Node", "Reader", "Cache", "Server", "Model", "Item", "Table", "Client"];

pub const WORDS: &[&str] = &[
    "hello", "world", "error", "done", "name", "value", "file", "not", "found", "ok", "start", "stop", "data", "is",
    "missing", "the", "result", "user", "key", "open", "closed", "ready", "loading", "empty", "invalid", "line",
];
