// The UCR `evaluator` expression (specs.py EvalExpressionSpec over simpleeval): a Python
// expression over context_variables, parsed once at compile time and evaluated with Python's
// semantics for the subset below; where HQ answers None (TypeError, ZeroDivisionError, an
// unknown name, `**`), so does this.
//
//   expr    := or ['if' or 'else' expr]       or  := and ('or' and)*
//   and     := not ('and' not)*               not := 'not' not | cmp
//   cmp     := sum (('=='|'!='|'<'|'<='|'>'|'>='|'in'|'not in') sum)*
//   sum     := term (('+'|'-') term)*         term := unary (('*'|'/'|'//'|'%') unary)*
//   unary   := ('-'|'+') unary | postfix      postfix := atom ('[' expr ']' | '.' name | call)*
//   atom    := number | string | name | True | False | None | '(' expr ')' | '[' list ']'
//   functions: int float str round range context root_context
#include <fmt/format.h>

#include <cmath>
#include <set>

#include "pillows/ucr_internal.h"

namespace commcare::pillows::ucr::internal {
namespace {

struct Node {
  enum Kind {
    kLit,
    kName,
    kUnary,
    kBinary,
    kAnd,
    kOr,
    kNot,
    kIf,
    kCmp,
    kIndex,
    kAttr,
    kCall,
    kList
  };
  Kind kind = kLit;
  std::string op;  // operator, name, attribute or function
  json::value lit;
  std::vector<std::unique_ptr<Node>> kids;
  std::vector<std::string> ops;  // kCmp: the operators between kids
  int height = 1;                // levels of the tree from here down (Parser::Adopt keeps it)
};
using NodeP = std::unique_ptr<Node>;

NodeP Make(Node::Kind k, std::string op = {}) {
  auto n = std::make_unique<Node>();
  n->kind = k;
  n->op = std::move(op);
  return n;
}

// A recursive-descent parser over the statement text.
class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}
  Result<NodeP> Parse() {
    CC_ASSIGN_OR_RETURN(NodeP n, Expr());
    Skip();
    if (i_ != s_.size()) return Err("unexpected text");
    return n;
  }

 private:
  Status Err(const std::string& what) const {
    return Status::InvalidArgument(fmt::format("{} at offset {}", what, i_));
  }
  void Skip() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool IsIdent(char ch) const { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; }
  // Consumes a keyword (a whole word) or a symbol if it comes next.
  bool Eat(std::string_view tok) {
    Skip();
    if (s_.substr(i_, tok.size()) != tok) return false;
    if (IsIdent(tok.back()) && i_ + tok.size() < s_.size() && IsIdent(s_[i_ + tok.size()]))
      return false;
    i_ += tok.size();
    return true;
  }
  bool Peek(std::string_view tok) {
    size_t save = i_;
    bool ok = Eat(tok);
    i_ = save;
    return ok;
  }
  // Two bounds keep a statement from exhausting the stack (fuzz/ucr found 8 KB of
  // "not not ..." overflowing it): the parser recurses once per nesting ('(', '[', a call's
  // arguments, 'not', a sign), at most kMaxNesting deep (Python's own parser stops at 200
  // parentheses); and the tree it builds, which evaluation and destruction recurse through,
  // is at most kMaxHeight tall (a chain 'a + b + c' or 'x[0][1]' is one level per operator).
  static constexpr int kMaxNesting = 200, kMaxHeight = 500;
  class Deeper {  // one level of nesting for its scope
   public:
    explicit Deeper(int* d) : d_(d) { ++*d_; }
    ~Deeper() { --*d_; }

   private:
    int* d_;
  };
  Status TooDeep() const {
    if (depth_ <= kMaxNesting) return Status::Ok();
    return Err(fmt::format("the statement nests more than {} levels deep", kMaxNesting));
  }
  // Makes kid a child of n, refusing a tree taller than kMaxHeight.
  Status Adopt(Node& n, NodeP kid) {
    n.height = std::max(n.height, kid->height + 1);
    n.kids.push_back(std::move(kid));
    if (n.height <= kMaxHeight) return Status::Ok();
    return Err(fmt::format("the statement's expression is more than {} levels deep", kMaxHeight));
  }
  Result<NodeP> Expr() {
    Deeper guard(&depth_);
    CC_RETURN_IF_ERROR(TooDeep());
    CC_ASSIGN_OR_RETURN(NodeP a, Or());
    if (!Eat("if")) return a;
    CC_ASSIGN_OR_RETURN(NodeP cond, Or());
    if (!Eat("else")) return Err("expected 'else'");
    CC_ASSIGN_OR_RETURN(NodeP b, Expr());
    NodeP n = Make(Node::kIf);
    CC_RETURN_IF_ERROR(Adopt(*n, std::move(cond)));
    CC_RETURN_IF_ERROR(Adopt(*n, std::move(a)));
    CC_RETURN_IF_ERROR(Adopt(*n, std::move(b)));
    return n;
  }
  Result<NodeP> Or() { return Chain(Node::kOr, "or", &Parser::And); }
  Result<NodeP> And() { return Chain(Node::kAnd, "and", &Parser::Not); }
  Result<NodeP> Chain(Node::Kind k, std::string_view word, Result<NodeP> (Parser::*next)()) {
    CC_ASSIGN_OR_RETURN(NodeP a, (this->*next)());
    if (!Peek(word)) return a;
    NodeP n = Make(k);
    CC_RETURN_IF_ERROR(Adopt(*n, std::move(a)));
    while (Eat(word)) {
      CC_ASSIGN_OR_RETURN(NodeP b, (this->*next)());
      CC_RETURN_IF_ERROR(Adopt(*n, std::move(b)));
    }
    return n;
  }
  Result<NodeP> Not() {
    if (!Eat("not")) return Cmp();
    Deeper guard(&depth_);
    CC_RETURN_IF_ERROR(TooDeep());
    CC_ASSIGN_OR_RETURN(NodeP a, Not());
    NodeP n = Make(Node::kNot);
    CC_RETURN_IF_ERROR(Adopt(*n, std::move(a)));
    return n;
  }
  Result<NodeP> Cmp() {
    CC_ASSIGN_OR_RETURN(NodeP a, Sum());
    NodeP n = Make(Node::kCmp);
    CC_RETURN_IF_ERROR(Adopt(*n, std::move(a)));
    while (true) {
      std::string op;
      for (const char* o : {"==", "!=", "<=", ">=", "<", ">", "in"})
        if (Eat(o)) {
          op = o;
          break;
        }
      if (op.empty() && Peek("not")) {
        size_t save = i_;
        Eat("not");
        if (Eat("in"))
          op = "not in";
        else
          i_ = save;
      }
      if (op.empty()) break;
      CC_ASSIGN_OR_RETURN(NodeP b, Sum());
      n->ops.push_back(op);
      CC_RETURN_IF_ERROR(Adopt(*n, std::move(b)));
    }
    if (n->ops.empty()) return std::move(n->kids[0]);
    return n;
  }
  Result<NodeP> Binary(std::initializer_list<const char*> ops, Result<NodeP> (Parser::*next)()) {
    CC_ASSIGN_OR_RETURN(NodeP a, (this->*next)());
    while (true) {
      std::string op;
      for (const char* o : ops)
        if (Eat(o)) {
          op = o;
          break;
        }
      if (op.empty()) return a;
      CC_ASSIGN_OR_RETURN(NodeP b, (this->*next)());
      NodeP n = Make(Node::kBinary, op);
      CC_RETURN_IF_ERROR(Adopt(*n, std::move(a)));
      CC_RETURN_IF_ERROR(Adopt(*n, std::move(b)));
      a = std::move(n);
    }
  }
  Result<NodeP> Sum() { return Binary({"+", "-"}, &Parser::Term); }
  Result<NodeP> Term() {
    if (Peek("**")) return Err("'**' is not allowed");
    return Binary({"//", "*", "/", "%"}, &Parser::Unary);
  }
  Result<NodeP> Unary() {
    for (const char* o : {"-", "+"})
      if (Eat(o)) {
        Deeper guard(&depth_);
        CC_RETURN_IF_ERROR(TooDeep());
        CC_ASSIGN_OR_RETURN(NodeP a, Unary());
        NodeP n = Make(Node::kUnary, o);
        CC_RETURN_IF_ERROR(Adopt(*n, std::move(a)));
        return n;
      }
    CC_ASSIGN_OR_RETURN(NodeP a, Postfix());
    if (Peek("**")) return Err("'**' is not allowed (HQ's evaluator refuses powers)");
    return a;
  }
  Result<NodeP> Postfix() {
    CC_ASSIGN_OR_RETURN(NodeP a, Atom());
    while (true) {
      const bool index = Eat("["), attr = !index && Eat(".");
      const bool call = !index && !attr && a->kind == Node::kName && Eat("(");
      if (!index && !attr && !call) return a;
      if (index) {
        CC_ASSIGN_OR_RETURN(NodeP k, Expr());
        if (!Eat("]")) return Err("expected ']'");
        NodeP n = Make(Node::kIndex);
        CC_RETURN_IF_ERROR(Adopt(*n, std::move(a)));
        CC_RETURN_IF_ERROR(Adopt(*n, std::move(k)));
        a = std::move(n);
      } else if (attr) {
        Skip();
        size_t b = i_;
        while (i_ < s_.size() && IsIdent(s_[i_])) ++i_;
        if (b == i_) return Err("expected a name after '.'");
        NodeP n = Make(Node::kAttr, std::string(s_.substr(b, i_ - b)));
        CC_RETURN_IF_ERROR(Adopt(*n, std::move(a)));
        a = std::move(n);
      } else {
        static const std::set<std::string> kFns = {"int",   "float",   "str",         "round",
                                                   "range", "context", "root_context"};
        if (!kFns.count(a->op)) return Err(fmt::format("function '{}' is not available", a->op));
        NodeP n = Make(Node::kCall, a->op);
        CC_RETURN_IF_ERROR(List(")", n.get()));
        a = std::move(n);
      }
    }
  }
  Status List(std::string_view close, Node* into) {
    if (Eat(close)) return Status::Ok();
    while (true) {
      CC_ASSIGN_OR_RETURN(NodeP x, Expr());
      CC_RETURN_IF_ERROR(Adopt(*into, std::move(x)));
      if (Eat(close)) return Status::Ok();
      if (!Eat(",")) return Err(fmt::format("expected ',' or '{}'", close));
    }
  }
  Result<NodeP> Atom() {
    Skip();
    if (i_ >= s_.size()) return Err("unexpected end");
    char ch = s_[i_];
    if (Eat("(")) {
      CC_ASSIGN_OR_RETURN(NodeP a, Expr());
      if (!Eat(")")) return Err("expected ')'");
      return a;
    }
    if (Eat("[")) {
      NodeP n = Make(Node::kList);
      CC_RETURN_IF_ERROR(List("]", n.get()));
      return n;
    }
    if (ch == '\'' || ch == '"') {
      std::string out;
      for (++i_; i_ < s_.size() && s_[i_] != ch; ++i_) {
        if (s_[i_] == '\\' && i_ + 1 < s_.size()) ++i_;
        out += s_[i_];
      }
      if (i_ >= s_.size()) return Err("unterminated string");
      ++i_;
      NodeP n = Make(Node::kLit);
      n->lit = json::value(out);
      return n;
    }
    if (std::isdigit(static_cast<unsigned char>(ch)) || ch == '.') {
      size_t b = i_;
      bool real = false;
      while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '.' ||
                                s_[i_] == 'e' || s_[i_] == 'E')) {
        real |= !std::isdigit(static_cast<unsigned char>(s_[i_]));
        ++i_;
      }
      std::string t(s_.substr(b, i_ - b));
      NodeP n = Make(Node::kLit);
      try {
        n->lit = real ? json::value(std::stod(t)) : json::value(std::stoll(t));
      } catch (const std::exception&) {
        return Err("bad number '" + t + "'");
      }
      return n;
    }
    if (IsIdent(ch)) {
      size_t b = i_;
      while (i_ < s_.size() && IsIdent(s_[i_])) ++i_;
      std::string w(s_.substr(b, i_ - b));
      NodeP n = Make(Node::kLit);
      if (w == "True")
        n->lit = true;
      else if (w == "False")
        n->lit = false;
      else if (w == "None")
        n->lit = nullptr;
      else if (w == "lambda" || w == "for" || w == "import")
        return Err("'" + w + "' is not allowed");
      else
        n = Make(Node::kName, w);
      return n;
    }
    return Err(fmt::format("unexpected '{}'", ch));
  }

  std::string_view s_;
  size_t i_ = 0;
  int depth_ = 0;
};

// Where HQ's evaluator gives None (TypeError, ZeroDivisionError, InvalidExpression...).
struct NoValue {};
using V = json::value;

bool IsNum(const V& v) { return v.is_number() || v.is_bool(); }
bool IsInt(const V& v) { return v.is_int64() || v.is_uint64() || v.is_bool(); }
int64_t I(const V& v) { return v.is_bool() ? v.get_bool() : v.to_number<int64_t>(); }
double D(const V& v) {
  double d = 0;
  AsNumber(v, &d);
  return d;
}

V Arith(const std::string& op, const V& a, const V& b) {
  if (op == "+" && a.is_string() && b.is_string())
    return V(std::string(a.get_string()) + std::string(b.get_string()));
  if (op == "+" && a.is_array() && b.is_array()) {
    json::array out = a.get_array();
    for (const auto& x : b.get_array()) out.push_back(x);
    return V(std::move(out));
  }
  if (!IsNum(a) || !IsNum(b)) throw NoValue{};
  bool ints = IsInt(a) && IsInt(b);
  if (op == "/") {
    if (D(b) == 0) throw NoValue{};
    return V(D(a) / D(b));
  }
  if (op == "//" || op == "%") {
    if (D(b) == 0) throw NoValue{};
    if (ints) {  // Python floors toward negative infinity
      int64_t x = I(a), y = I(b), q = x / y;
      if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
      return op == "//" ? V(q) : V(x - q * y);
    }
    double q = std::floor(D(a) / D(b));
    return op == "//" ? V(q) : V(D(a) - q * D(b));
  }
  if (ints) {
    int64_t x = I(a), y = I(b);
    return V(op == "+" ? x + y : op == "-" ? x - y : x * y);
  }
  double x = D(a), y = D(b);
  return V(op == "+" ? x + y : op == "-" ? x - y : x * y);
}

bool CmpOp(const std::string& op, const V& a, const V& b) {
  if (op == "==") return Equal(a, b);
  if (op == "!=") return !Equal(a, b);
  if (op == "in" || op == "not in") {
    if (!b.is_array() && !b.is_string() && !b.is_object()) throw NoValue{};
    bool in = false;
    if (b.is_array())
      for (const auto& x : b.get_array()) in |= Equal(a, x);
    else if (!a.is_string())
      throw NoValue{};
    else if (b.is_string())
      in = std::string_view(b.get_string()).find(std::string_view(a.get_string())) !=
           std::string_view::npos;
    else
      in = b.get_object().contains(a.get_string());
    return op == "in" ? in : !in;
  }
  auto c = Compare(a, b);
  if (!c) throw NoValue{};
  return op == "<" ? *c < 0 : op == "<=" ? *c <= 0 : op == ">" ? *c > 0 : *c >= 0;
}

struct Scope {
  const json::value& names;
  EvalContext& ctx;
};

V Call(const Node& n, std::vector<V> args, Scope& s) {
  const std::string& f = n.op;
  if (f == "context") return s.names;
  if (f == "root_context") return s.ctx.root ? *s.ctx.root : V();
  if (args.empty()) throw NoValue{};
  const V& x = args[0];
  double d;
  if (f == "str") return V(AsString(x));
  if (f == "int") {
    if (!AsNumber(x, &d) ||
        (x.is_string() && x.get_string().find_first_of(".eE") != std::string::npos))
      throw NoValue{};
    return V(static_cast<int64_t>(d));
  }
  if (f == "float") {
    if (!AsNumber(x, &d)) throw NoValue{};
    return V(d);
  }
  if (f == "round") {
    if (!IsNum(x)) throw NoValue{};
    if (args.size() < 2) return V(static_cast<int64_t>(std::nearbyint(D(x))));  // banker's
    double p = std::pow(10.0, static_cast<double>(I(args[1])));
    return V(std::nearbyint(D(x) * p) / p);
  }
  // range: HQ's safe_range gives None for 100 items or more.
  for (const auto& a : args)
    if (!IsInt(a)) throw NoValue{};
  int64_t start = args.size() > 1 ? I(args[0]) : 0, stop = args.size() > 1 ? I(args[1]) : I(x);
  int64_t step = args.size() > 2 ? I(args[2]) : 1;
  if (step == 0) throw NoValue{};
  json::array out;
  for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
    if (out.size() >= 99) return V();
    out.push_back(V(k));
  }
  return V(std::move(out));
}

V Run(const Node& n, Scope& s) {
  switch (n.kind) {
    case Node::kLit:
      return n.lit;
    case Node::kName: {
      const json::value* v = s.names.is_object() ? s.names.get_object().if_contains(n.op) : nullptr;
      if (!v) throw NoValue{};  // NameNotDefined
      return *v;
    }
    case Node::kUnary: {
      V a = Run(*n.kids[0], s);
      if (!IsNum(a)) throw NoValue{};
      if (n.op == "+") return IsInt(a) ? V(I(a)) : V(D(a));
      return IsInt(a) ? V(-I(a)) : V(-D(a));
    }
    case Node::kBinary:
      return Arith(n.op, Run(*n.kids[0], s), Run(*n.kids[1], s));
    case Node::kAnd:
    case Node::kOr: {
      V v;
      for (const auto& k : n.kids) {
        v = Run(*k, s);
        if (Truthy(v) == (n.kind == Node::kOr)) return v;
      }
      return v;
    }
    case Node::kNot:
      return V(!Truthy(Run(*n.kids[0], s)));
    case Node::kIf:
      return Truthy(Run(*n.kids[0], s)) ? Run(*n.kids[1], s) : Run(*n.kids[2], s);
    case Node::kCmp: {
      V a = Run(*n.kids[0], s);
      for (size_t i = 0; i < n.ops.size(); ++i) {
        V b = Run(*n.kids[i + 1], s);
        if (!CmpOp(n.ops[i], a, b)) return V(false);
        a = std::move(b);
      }
      return V(true);
    }
    case Node::kIndex: {
      V a = Run(*n.kids[0], s), k = Run(*n.kids[1], s);
      if (a.is_object() && k.is_string()) {
        const json::value* v = a.get_object().if_contains(k.get_string());
        if (!v) throw NoValue{};
        return *v;
      }
      if ((a.is_array() || a.is_string()) && IsInt(k)) {
        int64_t len = a.is_array() ? static_cast<int64_t>(a.get_array().size())
                                   : static_cast<int64_t>(a.get_string().size());
        int64_t i = I(k) < 0 ? I(k) + len : I(k);
        if (i < 0 || i >= len) throw NoValue{};
        if (a.is_array()) return a.get_array()[static_cast<size_t>(i)];
        return V(std::string(1, a.get_string()[static_cast<size_t>(i)]));
      }
      throw NoValue{};
    }
    case Node::kAttr: {  // simpleeval reads a dict's key as an attribute
      V a = Run(*n.kids[0], s);
      const json::value* v = a.is_object() ? a.get_object().if_contains(n.op) : nullptr;
      if (!v) throw NoValue{};
      return *v;
    }
    case Node::kCall: {
      std::vector<V> args;
      for (const auto& k : n.kids) args.push_back(Run(*k, s));
      return Call(n, std::move(args), s);
    }
    case Node::kList: {
      json::array out;
      for (const auto& k : n.kids) out.push_back(Run(*k, s));
      return V(std::move(out));
    }
  }
  throw NoValue{};
}

struct Evaluator : Expr {
  NodeP root;
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> vars;
  std::string datatype;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    json::value names;
    if (vars.empty() && item.is_object()) {  // no context_variables: the item itself
      names = item;
    } else {
      json::object o;
      for (const auto& [k, e] : vars) {
        CC_ASSIGN_OR_RETURN(json::value v, e->Eval(item, ctx));
        o[k] = std::move(v);
      }
      names = std::move(o);
    }
    Scope s{names, ctx};
    try {
      return Coerce(Run(*root, s), datatype);
    } catch (const NoValue&) {
      return json::value();
    }
  }
};

}  // namespace

Result<std::unique_ptr<Expr>> CompileEvaluator(const json::object& o, const std::string& path,
                                               Compiler& c) {
  auto e = std::make_unique<Evaluator>();
  const json::value* st = o.if_contains("statement");
  if (!st || !st->is_string()) return Bad(path + ".statement", "is required (a string)");
  auto parsed = Parser(st->get_string()).Parse();
  if (!parsed.ok()) return Bad(path + ".statement", parsed.status().message());
  e->root = std::move(parsed).value();
  if (const json::value* cv = o.if_contains("context_variables")) {
    if (!cv->is_object()) return Bad(path + ".context_variables", "must be an object");
    for (const auto& kv : cv->get_object()) {
      std::string name(kv.key());
      CC_ASSIGN_OR_RETURN(auto x, CompileExpr(kv.value(), path + ".context_variables." + name, c));
      e->vars.emplace_back(name, std::move(x));
    }
  }
  CC_ASSIGN_OR_RETURN(e->datatype, Datatype(o, path, false));
  return std::unique_ptr<Expr>(std::move(e));
}

}  // namespace commcare::pillows::ucr::internal
