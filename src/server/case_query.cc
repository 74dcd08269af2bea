#include "server/case_query.h"

#include <fmt/format.h>

#include <cctype>
#include <memory>
#include <string>
#include <vector>

namespace commcare::server {
namespace {

constexpr std::string_view kSubset =
    "the supported subset is `name op value` (op one of = > >= < <=, value a quoted string or a "
    "number), `and`, parentheses, and `or` between equalities of one name";

Status Unsupported(std::string_view what) {
  return Status::InvalidArgument(fmt::format("query: {} is not supported; {}", what, kSubset));
}

struct Token {
  enum Kind { kName, kString, kNumber, kOp, kOpen, kClose, kEnd } kind = kEnd;
  std::string text;
};

Result<std::vector<Token>> Tokenize(std::string_view s) {
  std::vector<Token> out;
  size_t i = 0;
  auto is_name = [](char c, bool first) {
    return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == '@' ||
           (!first && (std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '.'));
  };
  while (i < s.size()) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (c == '(' || c == ')') {
      out.push_back({c == '(' ? Token::kOpen : Token::kClose, std::string(1, c)});
      ++i;
    } else if (c == '\'' || c == '"') {
      const size_t end = s.find(c, i + 1);
      if (end == std::string_view::npos)
        return Status::InvalidArgument(fmt::format("query: the string at {} is not closed", i));
      out.push_back({Token::kString, std::string(s.substr(i + 1, end - i - 1))});
      i = end + 1;
    } else if (c == '=' || c == '<' || c == '>' || c == '!') {
      const size_t n = i + 1 < s.size() && s[i + 1] == '=' ? 2 : 1;
      out.push_back({Token::kOp, std::string(s.substr(i, n))});
      i += n;
    } else if (std::isdigit(static_cast<unsigned char>(c)) || c == '-') {
      size_t end = i + 1;
      while (end < s.size() && (std::isdigit(static_cast<unsigned char>(s[end])) || s[end] == '.'))
        ++end;
      out.push_back({Token::kNumber, std::string(s.substr(i, end - i))});
      i = end;
    } else if (is_name(c, true)) {
      size_t end = i + 1;
      while (end < s.size() && is_name(s[end], false)) ++end;
      out.push_back({Token::kName, std::string(s.substr(i, end - i))});
      i = end;
    } else {
      return Unsupported(fmt::format("'{}' (at {})", c, i));
    }
  }
  out.push_back({Token::kEnd, ""});
  return out;
}

// A parsed query: a comparison, or an and/or of parts.
struct Node {
  enum Kind { kCompare, kAnd, kOr } kind = kCompare;
  std::string name, op, value;
  std::vector<std::unique_ptr<Node>> parts;
};

class Parser {
 public:
  explicit Parser(std::vector<Token> t) : t_(std::move(t)) {}
  Result<std::unique_ptr<Node>> Parse() {
    CC_ASSIGN_OR_RETURN(auto n, Either(Node::kOr));
    if (t_[i_].kind != Token::kEnd) return Unsupported(fmt::format("'{}' there", t_[i_].text));
    return n;
  }

 private:
  bool Keyword(const char* k) const { return t_[i_].kind == Token::kName && t_[i_].text == k; }
  // kOr: and-expressions joined by `or`; kAnd: primaries joined by `and`.
  Result<std::unique_ptr<Node>> Either(Node::Kind kind) {
    const char* word = kind == Node::kOr ? "or" : "and";
    auto n = std::make_unique<Node>();
    n->kind = kind;
    while (true) {
      CC_ASSIGN_OR_RETURN(auto part, kind == Node::kOr ? Either(Node::kAnd) : Primary());
      n->parts.push_back(std::move(part));
      if (!Keyword(word)) break;
      ++i_;
    }
    if (n->parts.size() == 1) return std::move(n->parts[0]);
    return n;
  }
  Result<std::unique_ptr<Node>> Primary() {
    if (t_[i_].kind == Token::kOpen) {
      // Each '(' is two frames of recursion; a bound keeps a hostile query off the stack's end.
      if (++depth_ > kMaxDepth)
        return Status::InvalidArgument(
            fmt::format("query: parentheses nest deeper than {}", kMaxDepth));
      ++i_;
      CC_ASSIGN_OR_RETURN(auto n, Either(Node::kOr));
      if (t_[i_].kind != Token::kClose) return Unsupported("an unclosed '('");
      ++i_;
      --depth_;
      return n;
    }
    if (t_[i_].kind != Token::kName) return Unsupported(fmt::format("'{}' there", t_[i_].text));
    auto n = std::make_unique<Node>();
    n->name = t_[i_++].text;
    if (t_[i_].kind == Token::kOpen) return Unsupported(fmt::format("the function {}()", n->name));
    if (t_[i_].kind != Token::kOp) return Unsupported(fmt::format("'{}' alone", n->name));
    n->op = t_[i_++].text;
    if (n->op == "!=" || n->op == "!") return Unsupported("'!='");
    if (t_[i_].kind != Token::kString && t_[i_].kind != Token::kNumber)
      return Unsupported(fmt::format("comparing {} with '{}'", n->name, t_[i_].text));
    n->value = t_[i_++].text;
    return n;
  }

  static constexpr int kMaxDepth = 32;
  std::vector<Token> t_;
  size_t i_ = 0;
  int depth_ = 0;
};

// The any_of field of a name.
std::string Field(const std::string& name) {
  if (name == "@case_type") return "case_type";
  if (name == "@owner_id") return "owner_id";
  if (name == "name" || name == "case_name") return "case_name";
  if (name == "external_id") return "external_id";
  return "properties." + name;
}

Status Apply(const Node& n, CaseSearchQuery* q) {
  if (n.kind == Node::kAnd) {
    for (const auto& p : n.parts) CC_RETURN_IF_ERROR(Apply(*p, q));
    return Status::Ok();
  }
  if (n.kind == Node::kOr) {  // equalities of one name
    std::vector<std::string> values;
    std::vector<const Node*> todo = {&n};
    std::string name;
    while (!todo.empty()) {
      const Node* x = todo.back();
      todo.pop_back();
      for (const auto& p : x->parts) {
        if (p->kind == Node::kOr) {
          todo.push_back(p.get());
        } else if (p->kind != Node::kCompare || p->op != "=" ||
                   (!name.empty() && p->name != name) ||
                   (p->name.starts_with('@') && p->name != "@case_type" &&
                    p->name != "@owner_id")) {
          return Unsupported("'or' other than between equalities of one name");
        } else {
          name = p->name;
          values.push_back(p->value);
        }
      }
    }
    q->any_of.emplace_back(Field(name), std::move(values));
    return Status::Ok();
  }
  if (n.name == "@status") {
    if (n.op != "=" || (n.value != "open" && n.value != "closed"))
      return Unsupported("@status other than = 'open' or = 'closed'");
    q->closed = n.value == "closed";
    return Status::Ok();
  }
  if (n.name.starts_with('@') && n.name != "@case_type" && n.name != "@owner_id")
    return Unsupported(fmt::format("the attribute {}", n.name));
  if (n.op == "=") {
    q->any_of.emplace_back(Field(n.name), std::vector<std::string>{n.value});
    return Status::Ok();
  }
  if (n.name.starts_with('@')) return Unsupported(fmt::format("'{}' on {}", n.op, n.name));
  const std::string op = n.op == ">" ? "gt" : n.op == ">=" ? "gte" : n.op == "<" ? "lt" : "lte";
  q->ranges.push_back({n.name, op, n.value});
  return Status::Ok();
}

}  // namespace

Status AddXPathQuery(std::string_view xpath, CaseSearchQuery* q) {
  CC_ASSIGN_OR_RETURN(auto tokens, Tokenize(xpath));
  if (tokens.size() == 1) return Status::InvalidArgument("query: is empty");
  CC_ASSIGN_OR_RETURN(auto root, Parser(std::move(tokens)).Parse());
  return Apply(*root, q);
}

}  // namespace commcare::server
