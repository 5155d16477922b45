//! Data-driven tests of the `q` parser, printer and evaluator.

use serde_json::{Value as Json, json};

use super::*;
use crate::JsonTarget;

/// Parses `input` and compares the canonical print, or the error, with
/// `expected` (`"error: <message> at byte <n>"`).
#[track_caller]
fn check(input: &str, expected: &str) {
    let got = match parse_q(input) {
        Ok(q) => {
            let printed = q.to_string();
            assert_eq!(
                parse_q(&printed).as_ref(),
                Ok(&q),
                "round trip of {input:?} via {printed:?}"
            );
            printed
        }
        Err(e) => format!("error: {e}"),
    };
    assert_eq!(got, expected, "input: {input:?}");
}

fn entities() -> Vec<Json> {
    vec![
        json!({
            "id": "urn:ngsi-ld:Car:1", "type": "Car",
            "speed": {"type": "Property", "value": 80, "observedAt": "2020-08-01T12:00:00Z"},
            "brandName": {"type": "Property", "value": "Mercedes"},
            "color": {"type": "Property", "value": ["blue", "red", "green"]},
            "isParked": {"type": "Relationship", "object": "urn:ngsi-ld:Park:1",
                         "providedBy": {"type": "Relationship", "object": "urn:ngsi-ld:Person:Bob"}},
            "address": {"type": "Property", "value": {"city": "Berlin", "geo": {"zip": 10115}}},
            "sensor": {"type": "Property", "value": 40,
                       "rawdata": {"type": "Property", "value": {"airquality": {"particulate": 40}}}},
            "temperature": [
                {"type": "Property", "value": 20, "datasetId": "urn:a"},
                {"type": "Property", "value": 30, "datasetId": "urn:b"}
            ],
            "name": {"type": "LanguageProperty", "languageMap": {"en": "car", "fr": "voiture"}},
            "registered": {"type": "Property", "value": {"@type": "DateTime", "@value": "2017-12-24T12:00:00Z"}},
            "day": {"type": "Property", "value": "2020-01-05"},
            "opensAt": {"type": "Property", "value": "08:00:00Z"},
            "active": {"type": "Property", "value": true},
            "gender": {"type": "VocabProperty", "vocab": "Male"},
            "big": {"type": "Property", "value": 9007199254740993u64}
        }),
        json!({
            "id": "urn:ngsi-ld:Car:2", "type": "Car",
            "speed": {"type": "Property", "value": 40.5, "observedAt": "2021-08-01T12:00:00Z"},
            "brandName": {"type": "Property", "value": "BMW"},
            "color": {"type": "Property", "value": "black"},
            "isParked": {"type": "Relationship", "object": ["urn:ngsi-ld:Park:2", "urn:ngsi-ld:Park:3"]},
            "address": {"type": "Property", "value": {"city": "Madrid"}},
            "temperature": {"type": "Property", "value": 25},
            "registered": {"type": "Property", "value": "2019-01-01T00:00:00Z"},
            "day": {"type": "Property", "value": "2021-03-01"},
            "opensAt": {"type": "Property", "value": "09:30:00Z"},
            "active": {"type": "Property", "value": false},
            "count": {"type": "Property", "value": "80"},
            "big": {"type": "Property", "value": 9007199254740992u64}
        }),
        json!({
            "id": "urn:ngsi-ld:Car:3", "type": "Car",
            "brandName": {"type": "Property", "value": "Audi"},
            "color": {"type": "Property", "value": ["black", "white"]},
            "address": {"type": "Property", "value": "unknown"},
            "count": {"type": "Property", "value": 3}
        }),
    ]
}

/// Evaluates `query` against the three fixture cars and compares the numbers
/// of the matching ones (`"1 3"`, or `""` for none) with `expected`.
#[track_caller]
fn check_match(query: &str, expected: &str) {
    let q = parse_q(query).unwrap_or_else(|e| panic!("{query:?}: {e}"));
    let got: Vec<String> = entities()
        .iter()
        .filter(|e| q.matches(&JsonTarget(e)))
        .map(|e| {
            e["id"]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(got.join(" "), expected, "query: {query:?}");
}

#[test]
fn parse_comparisons_and_values() {
    check("temperature==20", "temperature==20");
    check("brandName!=\"Mercedes\"", "brandName!=\"Mercedes\"");
    check("speed>50", "speed>50");
    check("speed>=50.5", "speed>=50.5");
    check("speed<-1.5e3", "speed<-1500.0");
    check("speed<=1E2", "speed<=100.0");
    check("speed==0", "speed==0");
    check("speed==-0.25", "speed==-0.25");
    check("active==true", "active==true");
    check("active!=false", "active!=false");
    check("a==\"x\\\"y\\\\z\\u00e9\\n\"", "a==\"x\\\"y\\\\zé\\n\"");
    check("a==\"\\ud83d\\ude00\"", "a==\"😀\"");
    check(
        "isParked==urn:ngsi-ld:OffStreetParking:Downtown1",
        "isParked==urn:ngsi-ld:OffStreetParking:Downtown1",
    );
    check(
        "rel==https://example.org/a?b=c#d",
        "rel==https://example.org/a?b=c#d",
    );
    check("gender==Male", "gender==Male");
    check(
        "temperature.observedAt>=2017-12-24T12:00:00Z",
        "temperature.observedAt>=2017-12-24T12:00:00Z",
    );
    check(
        "a<2017-12-24T12:00:00.123456Z",
        "a<2017-12-24T12:00:00.123456Z",
    );
    check("a<2017-12-24T12:00:00+01:00", "a<2017-12-24T12:00:00+01:00");
    check("a==2017-12-24", "a==2017-12-24");
    check("a>12:00:00Z", "a>12:00:00Z");
    check("a>12:00:00.5", "a>12:00:00.5");
}

#[test]
fn parse_lists_and_ranges() {
    check("a==1..5", "a==1..5");
    check("a!=1.5..2.5", "a!=1.5..2.5");
    check("a==-5..-1", "a==-5..-1");
    check("a==\"a\"..\"m\"", "a==\"a\"..\"m\"");
    check(
        "a==2017-01-01T00:00:00Z..2018-01-01T00:00:00Z",
        "a==2017-01-01T00:00:00Z..2018-01-01T00:00:00Z",
    );
    check("a==2017-01-01..2017-12-31", "a==2017-01-01..2017-12-31");
    check("a==08:00:00Z..10:00:00Z", "a==08:00:00Z..10:00:00Z");
    check("a==\"x\",\"y\"", "a==\"x\",\"y\"");
    check("color==\"black\", \"red\"", "color==\"black\",\"red\"");
    check("a==1,2,3", "a==1,2,3");
    check("a==1,\"x\",true,urn:a:b", "a==1,\"x\",true,urn:a:b");
    check(
        "a==1..\"x\"",
        "error: both ends of a range must be of the same kind at byte 6",
    );
    check(
        "a==true..false",
        "error: a range needs numbers, strings, dates, times or date-times at byte 3",
    );
    check(
        "a==1..",
        "error: expected a value, found end of input at byte 6",
    );
    check(
        "a>1,2",
        "error: value lists and ranges are only allowed after '==' and '!=' at byte 3",
    );
    check(
        "a>1..2",
        "error: value lists and ranges are only allowed after '==' and '!=' at byte 3",
    );
    check(
        "a==1,",
        "error: expected a value, found end of input at byte 5",
    );
}

#[test]
fn parse_paths() {
    check("temperature", "temperature");
    check("a.b.c", "a.b.c");
    check("a.observedAt", "a.observedAt");
    check("address[city]==\"Berlin\"", "address[city]==\"Berlin\"");
    check(
        "sensor.rawdata[airquality.particulate]==40",
        "sensor.rawdata[airquality.particulate]==40",
    );
    check("a[b][c]==1", "a[b.c]==1");
    check("name[*]==\"car\"", "name[*]==\"car\"");
    check("ex:speed>1", "ex:speed>1");
    check("tempé_2", "tempé_2");
    check("!speed", "!speed");
    check(
        "a.",
        "error: expected a sub-attribute name (a name starting with a letter), found end of input at byte 2",
    );
    check(
        "1a==1",
        "error: expected an attribute name (a name starting with a letter), found '1' at byte 0",
    );
    check(
        "a[]==1",
        "error: expected a JSON member name, found ']' at byte 2",
    );
    check("a[b==1", "error: expected ']', found '=' at byte 3");
    check("a=1", "error: expected '==', found a single '=' at byte 1");
    check(
        "a==",
        "error: expected a value, found end of input at byte 3",
    );
    check(
        "a>true",
        "error: ordering operators need a number, string, date, time or date-time at byte 2",
    );
    check(
        "a>urn:x",
        "error: ordering operators need a number, string, date, time or date-time at byte 2",
    );
    check("a b", "error: expected an operator, found 'b' at byte 2");
}

#[test]
fn parse_linked_terms() {
    check(
        "managedBy{name}==\"Pisa Tower\"",
        "managedBy{name}==\"Pisa Tower\"",
    );
    check("managedBy{ Building:name }", "managedBy{Building:name}");
    check("a{T,U:b.c[k]}>=3", "a{T,U:b.c[k]}>=3");
    check("a{ T , U : b}", "a{T,U:b}");
    check("a{T:ex:b}==1", "a{T:ex:b}==1");
    check("a{b{T:c}}==1;d", "a{b{T:c}}==1;d");
    check("(a{b}|c{d})", "a{b}|c{d}");
    check(
        "a.b{c}==1",
        "error: a linked entity term follows a Relationship named alone (attr{...}), not a path at byte 3",
    );
    check(
        "!a{b}",
        "error: '!' cannot be applied to a linked entity term (attr{...}) at byte 5",
    );
    check(
        "a{b==1",
        "error: expected '}' to close the linked entity term, found '=' at byte 3",
    );
    check(
        "a{}",
        "error: expected an attribute name (a name starting with a letter), found '}' at byte 2",
    );
    check(
        "a{T:}",
        "error: expected an attribute name (a name starting with a letter), found '}' at byte 4",
    );
    let deep = format!("{}x{}", "a{".repeat(70), "}".repeat(70));
    assert!(
        parse_q(&deep)
            .unwrap_err()
            .to_string()
            .contains("nesting deeper than")
    );
}

/// Resolves the linked terms of `query` against the fixture cars and two
/// parks, then lists the cars that match.
#[track_caller]
fn check_linked(query: &str, expected: &str) {
    let world = {
        let mut all = entities();
        all.push(json!({"id": "urn:ngsi-ld:Park:1", "type": "Park",
            "free": {"type": "Property", "value": 3},
            "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Car:3"}}));
        all.push(json!({"id": "urn:ngsi-ld:Park:3", "type": "Garage",
            "free": {"type": "Property", "value": 0}}));
        all
    };
    let mut q = parse_q(query).unwrap_or_else(|e| panic!("{query:?}: {e}"));
    q.resolve_links(&mut |hop, rest| {
        Some(
            world
                .iter()
                .filter(|e| hop.types.is_empty() || hop.types.iter().any(|t| e["type"] == **t))
                .filter(|e| Query::Term(rest.clone()).matches(&JsonTarget(e)))
                .map(|e| e["id"].as_str().unwrap().into())
                .collect(),
        )
    });
    let got: Vec<&str> = world
        .iter()
        .filter(|e| q.matches(&JsonTarget(e)))
        .map(|e| e["id"].as_str().unwrap().rsplit(':').next().unwrap())
        .collect();
    assert_eq!(got.join(" "), expected, "query: {query:?}");
}

#[test]
fn match_linked_terms() {
    // Car 1 is parked at Park 1 (3 free), car 2 at Park 2 (unknown) and
    // Garage 3 (none free).
    check_linked("isParked{free}>0", "1");
    check_linked("isParked{free}==0", "2");
    check_linked("isParked{free}", "1 2");
    check_linked("isParked{Park:free}", "1");
    check_linked("isParked{Garage,Park:free}", "1 2");
    check_linked("isParked{Car:free}", "");
    check_linked("isParked{free}>0;brandName==\"BMW\"", "");
    check_linked("isParked{free}>0|brandName==\"BMW\"", "1 2");
    // Two hops: the park's owner is car 3, an Audi.
    check_linked("isParked{owner{brandName}}==\"Audi\"", "1");
    // A Property is not followed, even when its value is an entity id.
    check_linked("brandName{free}", "");
    // Unresolved, a linked term matches nothing with a target that cannot
    // look entities up...
    check_match("isParked{free}", "");
    // ...and looks each object up with one that can.
    struct World(Vec<Json>, usize);
    impl Target for World {
        fn values(&self, path: &AttrPath, out: &mut Vec<Json>) {
            JsonTarget(&self.0[self.1]).values(path, out)
        }
        fn is_relationship(&self, path: &AttrPath) -> bool {
            JsonTarget(&self.0[self.1]).is_relationship(path)
        }
        fn is_language_map(&self, path: &AttrPath) -> bool {
            JsonTarget(&self.0[self.1]).is_language_map(path)
        }
        fn linked(&self, id: &str, hop: &Hop, rest: &Query) -> bool {
            self.0.iter().position(|e| e["id"] == id).is_some_and(|i| {
                (hop.types.is_empty() || hop.types.iter().any(|t| self.0[i]["type"] == **t))
                    && rest.matches(&World(self.0.clone(), i))
            })
        }
    }
    let mut world = entities();
    world.push(json!({"id": "urn:ngsi-ld:Park:1", "type": "Park",
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Car:3"}}));
    for (query, expected) in [
        ("isParked{owner}", true),
        ("isParked{owner{brandName}}==\"Audi\"", true),
        ("isParked{Park:owner{Car:count}}>2", true),
        ("isParked{Garage:owner}", false),
        ("isParked{owner{brandName}}==\"BMW\"", false),
    ] {
        let q = parse_q(query).unwrap();
        assert_eq!(q.matches(&World(world.clone(), 0)), expected, "{query}");
    }
}

#[test]
fn parse_logic_and_precedence() {
    check("a;b|c", "(a;b)|c");
    check("a|b;c", "a|(b;c)");
    check("a|b|c", "a|b|c");
    check("(a|b);c", "(a|b);c");
    check(
        "((speed>50|rpm>3000);brandName==\"Mercedes\")",
        "(speed>50|rpm>3000);brandName==\"Mercedes\"",
    );
    check(
        "(temperature>=20;temperature<=25)|capacity<=10",
        "(temperature>=20;temperature<=25)|capacity<=10",
    );
    check("(a;b);c", "(a;b);c");
    check("(((a)))", "a");
    check(" a == 1 ; b ", "a==1;b");
    check(
        "(a",
        "error: expected ')' to close the '(' at byte 0, found end of input at byte 2",
    );
    check("a)", "error: unexpected ')' at byte 1");
    check(
        "a;",
        "error: expected an attribute name (a name starting with a letter), found end of input at byte 2",
    );
    check("", "error: query is empty at byte 0");
    check(
        "()",
        "error: expected an attribute name (a name starting with a letter), found ')' at byte 1",
    );
    let deep = format!("{}a{}", "(".repeat(65), ")".repeat(65));
    check(&deep, "error: nesting deeper than 64 levels at byte 65");
    let ok = format!("{}a{}", "(".repeat(64), ")".repeat(64));
    check(&ok, "a");
    let long = "a;".repeat(9000);
    check(
        &long,
        "error: query is longer than 16384 bytes at byte 16384",
    );
}

#[test]
fn parse_numbers_and_temporals_strictly() {
    check("a==01", "error: unexpected '1' after a value at byte 4");
    check("a==1.", "error: unexpected '.' after a value at byte 4");
    check("a==1e", "error: unexpected 'e' after a value at byte 4");
    check(
        "a==1e999",
        "error: number '1e999' is out of range at byte 3",
    );
    check(
        "a==2017-13-01",
        "error: invalid date '2017-13-01' at byte 3",
    );
    check(
        "a==12:00:00+01:00",
        "error: invalid time '12:00:00+01:00' at byte 3",
    );
    check(
        "a==2017-02-29T00:00:00Z",
        "error: invalid date-time '2017-02-29T00:00:00Z' at byte 3",
    );
    check(
        "a==2017-12-24T12:00:00",
        "error: invalid date-time '2017-12-24T12:00:00' at byte 3",
    );
    check("a==\"abc", "error: unterminated string at byte 3");
    check("a==\"\\x\"", "error: invalid escape in string at byte 4");
    check(
        "a==\"\\ud800\"",
        "error: unpaired surrogate in string at byte 4",
    );
    check(
        "a==\"\u{1}\"",
        "error: control character in string at byte 4",
    );
    check("a==5abc", "error: unexpected 'a' after a value at byte 4");
}

#[test]
fn parse_patterns() {
    check("name~=\"^Mer.*\"", "name~=\"^Mer.*\"");
    check("name~=^Mer.*", "name~=\"^Mer.*\"");
    check("name!~=(?i)bmw", "name!~=\"(?i)bmw\"");
    check("name~=(a|b);x", "name~=\"(a|b)\";x");
    check("(name~=a[)]b)", "name~=\"a[)]b\"");
    check("name~=a\\;b", "name~=\"a\\\\;b\"");
    check("name~=\"a\\\"b\\d\"", "name~=\"a\\\"b\\\\d\"");
    check("name~=\"a|b\"|x", "name~=\"a|b\"|x");
    check("name~=", "error: empty regular expression at byte 6");
    check(
        "name~=\"(\"",
        "error: invalid regular expression: error: unclosed group at byte 6",
    );
    check(
        "name~=\"abc",
        "error: unterminated regular expression at byte 6",
    );
    check(
        "name~=\"a{1000}{1000}\"",
        "error: invalid regular expression: it is too big at byte 6",
    );
}

#[test]
fn match_existence() {
    check_match("speed", "1 2");
    check_match("!speed", "3");
    check_match("speed.observedAt", "1 2");
    check_match("isParked.providedBy", "1");
    check_match("address[city]", "1 2");
    check_match("address[geo.zip]", "1");
    check_match("nothing", "");
}

#[test]
fn match_numbers() {
    check_match("speed==80", "1");
    check_match("speed==80.0", "1");
    check_match("speed>50", "1");
    check_match("speed>=40.5", "1 2");
    check_match("speed<80", "2");
    check_match("speed<=80", "1 2");
    check_match("speed==40..80", "1 2");
    check_match("speed==40.6..79", "");
    check_match("speed!=40..50", "1");
    check_match("speed==1,80", "1");
    // Only entities that have the attribute match '!='.
    check_match("speed!=80", "2");
    // A string "80" is another data type: not equal, so '!=' matches.
    check_match("count==80", "");
    check_match("count!=80", "2 3");
    check_match("count>1", "3");
    // Integers beyond f64 precision compare exactly.
    check_match("big==9007199254740993", "1");
    check_match("big>9007199254740992", "1");
}

#[test]
fn match_strings() {
    check_match("brandName==\"Mercedes\"", "1");
    check_match("brandName!=\"Mercedes\"", "2 3");
    check_match("brandName>\"Audi\"", "1 2");
    check_match("brandName==\"Audi\"..\"BMW\"", "2 3");
    check_match("brandName==\"BMW\",\"Audi\"", "2 3");
    check_match("brandName==80", "");
    check_match("brandName!=80", "1 2 3");
}

#[test]
fn match_arrays() {
    check_match("color==\"red\"", "1");
    check_match("color==\"black\"", "2 3");
    check_match("color!=\"red\"", "2 3");
    check_match("color!=\"black\"", "1");
    check_match("color==\"white\",\"red\"", "1 3");
    check_match("color!=\"white\",\"red\"", "2");
    // Ordering operators do not look into arrays: an array is not a string.
    check_match("color>\"a\"", "2");
}

#[test]
fn match_multi_instance_attributes() {
    check_match("temperature==30", "1");
    check_match("temperature==20;temperature==30", "1");
    check_match("temperature>25", "1");
    // Any instance may satisfy the term: instance 30 is != 20.
    check_match("temperature!=20", "1 2");
    check_match("temperature!=20,30", "2");
}

#[test]
fn match_relationships() {
    check_match("isParked==urn:ngsi-ld:Park:1", "1");
    check_match("isParked==\"urn:ngsi-ld:Park:3\"", "2");
    check_match("isParked==urn:ngsi-ld:Park:9,urn:ngsi-ld:Park:2", "2");
    check_match("isParked!=urn:ngsi-ld:Park:1", "2");
    check_match("isParked.providedBy==urn:ngsi-ld:Person:Bob", "1");
    // Clause 4.9: relationships only match '==' and '!='.
    check_match("isParked>\"urn\"", "");
    check_match("isParked~=Park", "");
}

#[test]
fn match_temporals() {
    check_match("speed.observedAt>=2020-08-01T12:00:00Z", "1 2");
    check_match("speed.observedAt>2020-08-01T12:00:00Z", "2");
    check_match("speed.observedAt==2020-08-01T13:00:00+01:00", "1");
    check_match("speed.observedAt<2020-08-01T12:00:00.000001Z", "1");
    check_match("registered<2018-01-01T00:00:00Z", "1");
    check_match(
        "registered==2017-01-01T00:00:00Z..2020-01-01T00:00:00Z",
        "1 2",
    );
    check_match("day>2020-06-01", "2");
    check_match("day==2020-01-05", "1");
    check_match("opensAt<09:00:00Z", "1");
    check_match("opensAt==08:00:00Z..09:30:00Z", "1 2");
    // A date-time literal against a value that is not a date-time.
    check_match("brandName>2020-01-01T00:00:00Z", "");
    check_match("day>2020-01-01T00:00:00Z", "");
}

#[test]
fn match_booleans_and_words() {
    check_match("active==true", "1");
    check_match("active!=true", "2");
    check_match("active==false,true", "1 2");
    check_match("gender==Male", "1");
    check_match("gender!=Female", "1");
}

#[test]
fn match_compound_values() {
    check_match("address[city]==\"Berlin\"", "1");
    check_match("address[city]!=\"Berlin\"", "2");
    check_match("address[geo][zip]>10000", "1");
    check_match("sensor.rawdata[airquality.particulate]==40", "1");
    check_match("name[en]==\"car\"", "1");
    check_match("name[*]==\"voiture\"", "1");
    // Without a language, any language's value is the target (clause 4.9).
    check_match("name==\"voiture\"", "1");
    check_match("name!=\"voiture\"", "");
    check_match("name!=\"bike\"", "1");
    check_match("name~=^voit", "1");
    check_match("name[en]!=\"voiture\"", "1");
}

#[test]
fn match_patterns() {
    check_match("brandName~=^M", "1");
    check_match("brandName~=e", "1");
    check_match("brandName~=\"(?i)bmw|audi\"", "2 3");
    check_match("brandName!~=^M", "2 3");
    // Non-string targets never match either pattern operator.
    check_match("speed~=8", "");
    check_match("speed!~=8", "");
    check_match("color~=red", "");
}

#[test]
fn match_logic() {
    check_match("speed>50;brandName!=\"Mercedes\"", "");
    check_match("speed>50|brandName==\"Audi\"", "1 3");
    check_match("(speed>50|count==3);brandName!=\"BMW\"", "1 3");
    check_match("speed>50|count==3;brandName==\"BMW\"", "1");
    check_match("brandName;!speed", "3");
}

#[test]
fn map_names_and_words() {
    let mut q = parse_q("speed.observedAt>1;address[city]==Berlin|(gender==Male,x;a)").unwrap();
    q.map_attr_names(&mut |n| format!("ex:{n}"));
    q.map_words(&mut |p, w| format!("{}/{w}", p.attr));
    assert_eq!(
        q.to_string(),
        "(ex:speed.ex:observedAt>1;ex:address[city]==ex:address/Berlin)|(ex:gender==ex:gender/Male,ex:gender/x;ex:a)"
    );
    q.map_compound_keys(&mut |k| k.to_uppercase());
    let paths: Vec<String> = q.paths().iter().map(|p| p.to_string()).collect();
    assert_eq!(
        paths,
        [
            "ex:speed.ex:observedAt",
            "ex:address[CITY]",
            "ex:gender",
            "ex:a"
        ]
    );
}

#[test]
fn matches_through_dyn_target() {
    let e = json!({"a": {"type": "Property", "value": 1}});
    let t = JsonTarget(&e);
    let dyn_t: &dyn Target = &t;
    assert!(parse_q("a==1").unwrap().matches(dyn_t));
    assert!(parse_q("a==1").unwrap().matches(&t));
}
