//! Property tests: no parser panics on any input, and printing then parsing
//! gives back the same tree.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::scope::{ScopeLevel, ScopePattern};
use crate::{JsonTarget, ScopeQuery, TypeExpr, parse_scope_q, parse_type_expr};

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z][a-zA-Z0-9_]{0,6}",
        1 => "[a-z]{1,3}:[a-zA-Z][a-z0-9]{0,4}",
        1 => "[é中][ü0-9_]{0,2}",
    ]
}

fn path() -> impl Strategy<Value = AttrPath> {
    (
        name(),
        prop::collection::vec(name(), 0..3),
        prop::collection::vec("[a-z*][a-zA-Z0-9_@:-]{0,4}", 0..3),
    )
        .prop_map(|(attr, sub_attrs, compound)| AttrPath {
            attr,
            sub_attrs,
            compound,
        })
}

/// Hops and the path of a linked term. Inside braces the names are plain:
/// a compact name right after `{` would read as a type hint.
fn linked_term() -> BoxedStrategy<(Vec<Hop>, AttrPath)> {
    let plain = || "[a-zA-Z][a-zA-Z0-9_]{0,6}";
    (
        name(),
        prop::collection::vec((plain(), prop::collection::vec(plain(), 0..3)), 0..3),
        prop::collection::vec(plain(), 0..3),
        path(),
    )
        .prop_map(|(first, more, first_types, mut path)| {
            path.attr = path
                .attr
                .split(':')
                .next_back()
                .map(|s| s.to_owned())
                .unwrap_or_default();
            let hop = |rel: String, types: Vec<String>| Hop {
                relationship: AttrPath {
                    attr: rel,
                    sub_attrs: Vec::new(),
                    compound: Vec::new(),
                },
                types,
            };
            let mut via = vec![hop(first, first_types)];
            via.extend(more.into_iter().map(|(r, t)| hop(r, t)));
            (via, path)
        })
        .boxed()
}

fn temporal(text: String, key: Option<i128>) -> Temporal {
    Temporal {
        key: key.expect("generated temporal is valid"),
        text,
    }
}

fn datetime() -> impl Strategy<Value = Value> {
    (
        1000u32..9999,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        0u32..60,
        prop::option::of("[0-9]{1,6}"),
    )
        .prop_map(|(y, mo, d, h, mi, s, frac)| {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}Z");
            let key = crate::temporal::parse_datetime(&text);
            Value::DateTime(temporal(text, key))
        })
}

fn date() -> impl Strategy<Value = Value> {
    (1000u32..9999, 1u32..=12, 1u32..=28).prop_map(|(y, mo, d)| {
        let text = format!("{y:04}-{mo:02}-{d:02}");
        let key = crate::temporal::parse_date(&text).map(i128::from);
        Value::Date(temporal(text, key))
    })
}

fn time() -> impl Strategy<Value = Value> {
    (0u32..24, 0u32..60, 0u32..60, any::<bool>()).prop_map(|(h, mi, s, z)| {
        let text = format!("{h:02}:{mi:02}:{s:02}{}", if z { "Z" } else { "" });
        let key = crate::temporal::parse_time(&text).map(i128::from);
        Value::Time(temporal(text, key))
    })
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(|i| Value::Number(Number::from(i))),
        any::<u64>().prop_map(|u| Value::Number(Number::from(u))),
        any::<f64>()
            .prop_filter_map("finite", Number::from_f64)
            .prop_map(Value::Number),
    ]
}

fn comparable() -> impl Strategy<Value = Value> {
    prop_oneof![
        number(),
        any::<String>().prop_map(Value::String),
        datetime(),
        date(),
        time(),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => comparable(),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => "[a-z][a-z0-9+.-]{0,4}:[A-Za-z0-9:_/?#=-]{1,12}"
            .prop_filter("no range dots", |w| !w.contains(".."))
            .prop_map(Value::Uri),
        1 => "[A-Z][a-zA-Z0-9_]{0,6}".prop_map(Value::Uri),
    ]
}

fn range() -> impl Strategy<Value = Operand> {
    prop_oneof![
        (number(), number()),
        (any::<String>(), any::<String>()).prop_map(|(a, b)| (Value::String(a), Value::String(b))),
        (datetime(), datetime()),
        (date(), date()),
        (time(), time()),
    ]
    .prop_map(|(a, b)| Operand::Range(a, b))
}

fn operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        value().prop_map(Operand::One),
        prop::collection::vec(value(), 2..4).prop_map(Operand::List),
        range(),
    ]
}

fn pattern() -> impl Strategy<Value = Pattern> {
    "[a-z.*+?^$|()\\\\\"; \\[\\]{}0-9]{1,12}".prop_filter_map("compiles", |s| Pattern::new(&s).ok())
}

fn predicate() -> BoxedStrategy<Predicate> {
    prop_oneof![
        Just(Predicate::Exists),
        Just(Predicate::NotExists),
        operand().prop_map(Predicate::Equal),
        operand().prop_map(Predicate::NotEqual),
        comparable().prop_map(Predicate::Greater),
        comparable().prop_map(Predicate::GreaterEq),
        comparable().prop_map(Predicate::Less),
        comparable().prop_map(Predicate::LessEq),
        pattern().prop_map(Predicate::Matches),
        pattern().prop_map(Predicate::NotMatches),
    ]
    .boxed()
}

fn query() -> impl Strategy<Value = Query> {
    let leaf = prop_oneof![
        4 => (path(), predicate()).prop_map(|(path, predicate)| Query::Term(Term {
            path,
            predicate,
            via: Vec::new(),
            resolved: Resolved::default(),
        })),
        1 => (linked_term(), predicate().prop_filter("no '!' on links", |p| {
            !matches!(p, Predicate::NotExists)
        }))
            .prop_map(|((via, path), predicate)| Query::Term(Term {
                path,
                predicate,
                via,
                resolved: Resolved::default(),
            })),
    ]
    .boxed();
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Query::And),
            prop::collection::vec(inner, 2..4).prop_map(Query::Or),
        ]
    })
}

fn scope_query() -> impl Strategy<Value = ScopeQuery> {
    let level = prop_oneof![
        Just(ScopeLevel::Any),
        "[a-zA-Z][a-z0-9_]{0,4}".prop_map(ScopeLevel::Name),
    ];
    let pattern = prop_oneof![
        1 => Just(ScopePattern { levels: vec![], descendants: true }),
        6 => (prop::collection::vec(level, 1..4), any::<bool>())
            .prop_map(|(levels, descendants)| ScopePattern { levels, descendants }),
    ];
    pattern
        .prop_map(ScopeQuery::Pattern)
        .prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..4).prop_map(ScopeQuery::And),
                prop::collection::vec(inner, 2..4).prop_map(ScopeQuery::Or),
            ]
        })
}

fn type_expr() -> impl Strategy<Value = TypeExpr> {
    let leaf =
        prop_oneof![name(), "https://example\\.org/[A-Za-z0-9/#_-]{1,8}",].prop_map(TypeExpr::Type);
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(TypeExpr::And),
            prop::collection::vec(inner, 2..4).prop_map(TypeExpr::Or),
        ]
    })
}

/// Strings assembled from the grammars' tokens, which reach far deeper into
/// the parsers than random text.
fn token_soup() -> impl Strategy<Value = String> {
    let tokens = [
        "a",
        "b.c",
        "x[y]",
        "[",
        "]",
        ".",
        "..",
        "==",
        "!=",
        ">",
        ">=",
        "<",
        "<=",
        "~=",
        "!~=",
        "!",
        ";",
        "|",
        ",",
        "(",
        ")",
        "{",
        "}",
        "\"",
        "\\",
        "\"s\"",
        "1",
        "-2.5e3",
        "0",
        "1e",
        "true",
        "false",
        "urn:a:b",
        "2017-12-24T12:00:00Z",
        "2017-12-24",
        "12:00:00Z",
        "/",
        "/#",
        "+",
        "#",
        " ",
        "é",
        "\u{0}",
        "\\u12",
        "(?i)",
        "*",
        ":",
    ];
    prop::collection::vec(prop::sample::select(tokens.to_vec()), 0..40).prop_map(|t| t.concat())
}

fn exercise(input: &str) {
    if let Ok(q) = parse_q(input) {
        assert_eq!(parse_q(&q.to_string()).as_ref(), Ok(&q), "{input:?}");
        let entity = json!({
            "a": {"type": "Property", "value": [1, "s", null, {"k": 2}, [true]]},
            "b": {"type": "Relationship", "object": "urn:a:b", "c": {"type": "Property", "value": "2017-12-24T12:00:00Z"}},
            "x": [{"type": "Property", "value": {"y": 1.5}}, {"type": "Property", "value": {"y": "12:00:00Z"}}]
        });
        q.matches(&JsonTarget(&entity));
    }
    if let Ok(s) = parse_scope_q(input) {
        assert_eq!(parse_scope_q(&s.to_string()).as_ref(), Ok(&s), "{input:?}");
        s.matches(&["/a/b", "c"]);
    }
    if let Ok(t) = parse_type_expr(input) {
        assert_eq!(
            parse_type_expr(&t.to_string()).as_ref(),
            Ok(&t),
            "{input:?}"
        );
    }
    let _ = crate::parse_attr_list(input);
    let _ = crate::parse_projection(input);
    let _ = crate::validate_scope(input);
}

proptest! {
    #[test]
    fn no_panic_on_arbitrary_strings(input in any::<String>()) {
        exercise(&input);
    }

    #[test]
    fn no_panic_on_token_soup(input in token_soup()) {
        exercise(&input);
    }

    #[test]
    fn q_round_trips(q in query()) {
        let printed = q.to_string();
        prop_assert_eq!(parse_q(&printed), Ok(q), "printed: {}", printed);
    }

    #[test]
    fn scope_q_round_trips(q in scope_query()) {
        let printed = q.to_string();
        prop_assert_eq!(parse_scope_q(&printed), Ok(q), "printed: {}", printed);
    }

    #[test]
    fn type_expr_round_trips(t in type_expr()) {
        let printed = t.to_string();
        prop_assert_eq!(parse_type_expr(&printed), Ok(t), "printed: {}", printed);
    }
}
